# postrm: remove keeps the config and the state; purge (dpkg has already
# deleted the conffile) removes the state and, when nothing of Sightline is
# left, the user.
case "$1" in
remove)
    daemon_reload
    ;;
purge)
    purge_state
    remove_old_systemd_dropin
    daemon_reload
    ;;
upgrade | failed-upgrade | abort-install | abort-upgrade | disappear) ;;
*)
    echo "postrm called with unknown argument '$1'" >&2
    exit 1
    ;;
esac
exit 0
