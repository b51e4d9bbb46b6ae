# %post: $1 is 1 on install, 2 on upgrade (the old package's %postun
# restarts then, once its files are gone).
ensure_files
fit_unit_to_systemd
daemon_reload
if [ "$1" -eq 1 ]; then
    start_after_install
fi
