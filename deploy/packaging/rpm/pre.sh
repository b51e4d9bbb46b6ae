# %pre: $1 is 1 on install, 2 on upgrade. The user must exist before the
# files are laid down: the config's group and the state folder's owner.
ensure_user
