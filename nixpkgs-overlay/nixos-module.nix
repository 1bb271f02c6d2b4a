# The NixOS module: `services.nix-attach.broker.enable` lets ordinary users
# into the builds they asked for, without sudo (the broker, socket
# activated, as root). Needs the nix-attach overlay for `pkgs.nix-attach`.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix-attach;
in
{
  options.services.nix-attach.broker.enable = lib.mkEnableOption "the nix-attach broker, so that users enter their own failed builds without sudo";

  config = lib.mkIf cfg.broker.enable {
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
  };
}
