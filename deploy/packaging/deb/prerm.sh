# prerm: stop and disable on removal; an upgrade keeps it running until
# postinst restarts it on the new binary.
case "$1" in
remove)
    remember_enabled
    stop_and_disable
    ;;
deconfigure)
    stop_and_disable
    ;;
upgrade | failed-upgrade) ;;
*)
    echo "prerm called with unknown argument '$1'" >&2
    exit 1
    ;;
esac
exit 0
