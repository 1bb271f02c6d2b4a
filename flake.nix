{
  description = "Attach a shell to a failed Nix build, inside its sandbox, with the builder's shell state";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system:
        f (import nixpkgs { inherit system; overlays = [ self.overlays.default ]; }));
    in
    {
      overlays.default = import ./nixpkgs-overlay;

      # services.nix-attach.broker.enable, with the overlay for pkgs.nix-attach.
      nixosModules.default = {
        imports = [ ./nixpkgs-overlay/nixos-module.nix ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      packages = forAllSystems (pkgs: {
        inherit (pkgs) nix-attach attachHook;
        default = pkgs.nix-attach;
      });

      checks = forAllSystems (pkgs: {
        unit-tests = pkgs.nix-attach.overrideAttrs {
          doCheck = true;
          cargoTestFlags = [ "--lib" ];
        };
      });
    };
}
