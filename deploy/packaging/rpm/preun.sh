# %preun: $1 is 0 on erase, 1 when an upgrade removes the old package.
if [ "$1" -eq 0 ]; then
    stop_and_disable
fi
