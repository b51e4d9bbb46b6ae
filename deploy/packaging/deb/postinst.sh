# postinst: configure (first install when $2 is empty, else an upgrade or
# a reinstall over kept config files).
case "$1" in
configure)
    ensure_user
    ensure_files
    fit_unit_to_systemd
    daemon_reload
    if [ -z "$2" ]; then
        start_after_install
    else
        restore_enabled
        restart_after_upgrade
    fi
    ;;
abort-upgrade | abort-remove | abort-deconfigure) ;;
*)
    echo "postinst called with unknown argument '$1'" >&2
    exit 1
    ;;
esac
exit 0
