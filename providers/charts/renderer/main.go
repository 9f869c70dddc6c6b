// fleetform-chart-renderer renders Helm charts with Helm's own engine (the Helm v4 SDK) for
// fleetform, which applies the result itself through server-side apply.
//
// It is deliberately narrow: it never talks to a cluster or a network. fleetform fetches the
// chart (directory, HTTP repository or OCI registry), reads the target cluster's version and
// API list, and sends a batch of render requests as one JSON document on stdin; the answer is
// one JSON document on stdout, one result per request in order. A request that fails gets an
// error in its own result; the others are still rendered.
//
// Rendering follows the SDK path Helm's install action takes (ProcessDependencies, schema
// validation in ToRenderValues, engine.Render, SortManifests) rather than `helm template`,
// which refuses charts whose disabled dependencies are missing from charts/ (see
// docs/providers/charts.md).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"sigs.k8s.io/yaml"
)

// request is one release to render.
type request struct {
	// Chart is a chart directory or a packaged chart (.tgz) on local disk.
	Chart string `json:"chart"`
	// Release and Namespace are the release's name and namespace (.Release.*).
	Release   string `json:"release"`
	Namespace string `json:"namespace"`
	// Values are the user-supplied values (merged over the chart's values.yaml by Helm).
	Values map[string]any `json:"values"`
	// KubeVersion and APIVersions describe the target cluster (.Capabilities).
	KubeVersion string   `json:"kubeVersion"`
	APIVersions []string `json:"apiVersions"`
	// Version and AppVersion, when set, replace Chart.yaml's (what `helm package
	// --version --app-version` does for charts kept unpackaged with placeholder versions).
	Version    string `json:"version,omitempty"`
	AppVersion string `json:"appVersion,omitempty"`
	// Upgrade renders as an upgrade (.Release.IsUpgrade) rather than an install.
	Upgrade bool `json:"upgrade,omitempty"`
}

// object is one rendered Kubernetes object, as JSON, with the template it came from.
type object struct {
	Source string          `json:"source"`
	Object json.RawMessage `json:"object"`
}

// hook is a rendered Helm hook with the events it fires on.
type hook struct {
	object
	Events         []string `json:"events"`
	Weight         int      `json:"weight"`
	DeletePolicies []string `json:"deletePolicies,omitempty"`
}

// result is what one request rendered to, or why it could not.
type result struct {
	Chart      string   `json:"chart,omitempty"`
	Version    string   `json:"version,omitempty"`
	AppVersion string   `json:"appVersion,omitempty"`
	CRDs       []object `json:"crds"`
	Objects    []object `json:"objects"`
	Hooks      []hook   `json:"hooks"`
	// Disabled lists dependencies Helm dropped by their condition (missing ones included).
	Disabled []string `json:"disabled,omitempty"`
	Error    *failure `json:"error,omitempty"`
}

// failure says which step failed, so fleetform can word the error for the user.
type failure struct {
	// Stage is one of load, kube-version, dependencies, values, template, parse.
	Stage   string `json:"stage"`
	Message string `json:"message"`
}

func main() {
	var in struct {
		Renders []request `json:"renders"`
	}
	dec := json.NewDecoder(os.Stdin)
	if err := dec.Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "fleetform-chart-renderer: reading the request: %v\n", err)
		os.Exit(2)
	}
	out := struct {
		Results []result `json:"results"`
	}{Results: make([]result, 0, len(in.Renders))}
	for _, r := range in.Renders {
		out.Results = append(out.Results, render(r))
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "fleetform-chart-renderer: writing the answer: %v\n", err)
		os.Exit(2)
	}
}

func fail(stage string, err error) result {
	return result{Error: &failure{Stage: stage, Message: err.Error()}}
}

func render(r request) result {
	ch, err := loader.Load(r.Chart)
	if err != nil {
		return fail("load", err)
	}
	if r.Version != "" {
		ch.Metadata.Version = r.Version
	}
	if r.AppVersion != "" {
		ch.Metadata.AppVersion = r.AppVersion
	}
	caps := common.DefaultCapabilities.Copy()
	if r.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(r.KubeVersion)
		if err != nil {
			return fail("kube-version", err)
		}
		caps.KubeVersion = *kv
	}
	if len(r.APIVersions) > 0 {
		caps.APIVersions = common.VersionSet(r.APIVersions)
	}
	if ch.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return fail("kube-version", fmt.Errorf("chart requires kubeVersion %s, which Kubernetes %s does not satisfy", ch.Metadata.KubeVersion, caps.KubeVersion.Version))
	}
	vals := r.Values
	if vals == nil {
		vals = map[string]any{}
	}
	if err := chartutil.ProcessDependencies(ch, vals); err != nil {
		return fail("dependencies", err)
	}
	present := map[string]bool{}
	for _, d := range ch.Dependencies() {
		present[d.Name()] = true
	}
	var disabled []string
	for _, d := range ch.Metadata.Dependencies {
		if !present[d.Name] {
			disabled = append(disabled, d.Name)
		}
	}
	opts := common.ReleaseOptions{Name: r.Release, Namespace: r.Namespace, Revision: 1, IsInstall: !r.Upgrade, IsUpgrade: r.Upgrade}
	renderVals, err := util.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return fail("values", err)
	}
	var e engine.Engine
	files, err := e.Render(ch, renderVals)
	if err != nil {
		return fail("template", err)
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return fail("parse", err)
	}
	res := result{Chart: ch.Name(), Version: ch.Metadata.Version, AppVersion: ch.Metadata.AppVersion, Disabled: disabled,
		CRDs: []object{}, Objects: []object{}, Hooks: []hook{}}
	for _, crd := range crdFiles(ch) {
		docs, err := toJSON(crd.Name, string(crd.Data))
		if err != nil {
			return fail("parse", err)
		}
		res.CRDs = append(res.CRDs, docs...)
	}
	for _, m := range manifests {
		docs, err := toJSON(m.Name, m.Content)
		if err != nil {
			return fail("parse", err)
		}
		res.Objects = append(res.Objects, docs...)
	}
	for _, h := range hooks {
		docs, err := toJSON(h.Path, h.Manifest)
		if err != nil {
			return fail("parse", err)
		}
		events := make([]string, 0, len(h.Events))
		for _, ev := range h.Events {
			events = append(events, string(ev))
		}
		policies := make([]string, 0, len(h.DeletePolicies))
		for _, p := range h.DeletePolicies {
			policies = append(policies, string(p))
		}
		for _, d := range docs {
			res.Hooks = append(res.Hooks, hook{object: d, Events: events, Weight: h.Weight, DeletePolicies: policies})
		}
	}
	return res
}

// crdFiles lists the crds/ files of the chart and of its enabled dependencies, in a stable order.
func crdFiles(ch *chart.Chart) []*common.File {
	var out []*common.File
	for _, c := range ch.CRDObjects() {
		out = append(out, c.File)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// toJSON turns a YAML stream into JSON objects, skipping empty documents.
func toJSON(source, content string) ([]object, error) {
	var out []object
	split := releaseutil.SplitManifests(content)
	keys := make([]string, 0, len(split))
	for k := range split {
		keys = append(keys, k)
	}
	// SplitManifests names documents manifest-0, manifest-1, ...: keep file order.
	sort.Slice(keys, func(i, j int) bool { return manifestIndex(keys[i]) < manifestIndex(keys[j]) })
	for _, k := range keys {
		doc := strings.TrimSpace(split[k])
		if doc == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if string(j) == "null" || string(j) == "{}" {
			continue
		}
		out = append(out, object{Source: source, Object: j})
	}
	return out, nil
}

func manifestIndex(k string) int {
	var n int
	fmt.Sscanf(strings.TrimPrefix(k, "manifest-"), "%d", &n)
	return n
}
