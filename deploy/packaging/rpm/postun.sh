# %postun: $1 is 0 on erase (rpm keeps an edited config as .rpmsave, the
# state folder when not empty, and the user: rpm has no purge), 1 after
# an upgrade (restart on the new binary).
if [ "$1" -eq 0 ]; then
    remove_old_systemd_dropin
fi
daemon_reload
if [ "$1" -ge 1 ]; then
    restart_after_upgrade
fi
