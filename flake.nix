{
  description = "fleetform: GitOps reconciliation for GPU fleets";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs { inherit system; };
        # The test peers: what tests/peers/*.sh install with apt and pip elsewhere.
        peers = with pkgs; [
          go                      # builds kube-apiserver + etcd from tests/kube-testenv
          docker-distribution     # the OCI registry peer
          apacheHttpd             # htpasswd -B
          openssl curl git openssh gnupg
          graphviz                # the demo's graph
          (python3.withPackages (ps: [ ps.libvirt ]))   # sushy-tools venv on libvirt's test driver
          libvirt
        ];
      in {
        packages.default = pkgs.rustPlatform.buildRustPackage {
          pname = "fleetform";
          version = "0.1.0";
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "fleetform" ];
          nativeBuildInputs = [ pkgs.pkg-config ];
          buildInputs = [ pkgs.openssl pkgs.libgit2 pkgs.libssh2 pkgs.zlib ];
          # Provider tests need the real peers (tests/run.sh); the sandboxed build runs none.
          doCheck = false;
          meta.mainProgram = "fleetform";
        };

        devShells.default = pkgs.mkShell {
          # Same toolchain as rust-toolchain.toml (1.95) where nixpkgs has it.
          packages = with pkgs; [ rustc cargo clippy rustfmt pkg-config openssl libgit2 libssh2 ] ++ peers;
          shellHook = ''
            echo "fleetform dev shell: scripts/demo.sh runs the main job, tests/run.sh the tests"
          '';
        };
      });
}
