# The NixOS module. Needs the nix-attach overlay for `pkgs.nix-attach`.
#   services.nix-attach.broker.enable     ordinary users enter the builds they
#                                         asked for, without sudo (the broker,
#                                         socket activated, as root)
#   services.nix-attach.injection.enable  the daemon's pre-build-hook puts the
#                                         attach hook into builds that
#                                         `nix-attach build` asks for (Nix
#                                         2.8-2.29, Lix 2.90-2.92)
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix-attach;
in
{
  options.services.nix-attach.broker.enable = lib.mkEnableOption "the nix-attach broker, so that users enter their own failed builds without sudo";
  options.services.nix-attach.injection.enable = lib.mkEnableOption "the nix-attach pre-build hook, so that builds asked for by `nix-attach build` pause without the hook in their inputs";

  config = lib.mkMerge [
    (lib.mkIf cfg.injection.enable {
      nix.settings.pre-build-hook = "${pkgs.nix-attach}/bin/nix-attach-pre-build-hook";
    })
    (lib.mkIf cfg.broker.enable {
      environment.systemPackages = [ pkgs.nix-attach ];

      systemd.sockets.nix-attach-broker = {
        description = "nix-attach broker socket";
        wantedBy = [ "sockets.target" ];
        socketConfig = {
          ListenStream = "/run/nix-attach/broker.sock";
          SocketMode = "0666";
          DirectoryMode = "0755";
        };
      };

      systemd.services.nix-attach-broker = {
        description = "nix-attach broker";
        requires = [ "nix-attach-broker.socket" ];
        after = [ "nix-daemon.service" ];
        serviceConfig = {
          ExecStart = "${lib.getExe pkgs.nix-attach} broker";
          ProtectHome = "read-only";
          NoNewPrivileges = true;
        };
      };
    })
  ];
}
