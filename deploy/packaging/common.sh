# Shell functions every maintainer script (deb) and scriptlet (rpm) of a
# Sightline package shares. `cargo xtask package` writes each script as
# `set -e`, then PACKAGE, NAME and AGENT, then this file, then the
# script's own part (deb/<script>.sh, rpm/<scriptlet>.sh).
#
# POSIX sh only (dash, bash, busybox). Never fails where systemd is not
# running (containers, chroots) or systemctl is missing: it only skips
# what needs a running systemd and says so.

UNIT="$PACKAGE.service"
CONF="/etc/sightline/$NAME.conf"
STATE="/var/lib/sightline/$NAME"

# As debhelper's scripts test it.
systemd_running() {
    [ -d /run/systemd/system ]
}

has_systemctl() {
    command -v systemctl >/dev/null 2>&1
}

ENV_FILE="/etc/sightline/$NAME.env"

# Whether the unit reads $ENV_FILE (EnvironmentFile=).
unit_reads_env_file() {
    for unit_file in "/lib/systemd/system/$UNIT" "/usr/lib/systemd/system/$UNIT"; do
        if [ -f "$unit_file" ] && grep -Eq "^EnvironmentFile=-?$ENV_FILE\$" "$unit_file"; then
            return 0
        fi
    done
    return 1
}

# Whether the config file, or the environment file the unit reads, names
# a license (an agent without one exits 2).
has_license() {
    if [ -f "$CONF" ] && grep -Eq '^[[:space:]]*license[[:space:]]*=[[:space:]]*["'"'"']?[A-Za-z0-9]' "$CONF"; then
        return 0
    fi
    [ -f "$ENV_FILE" ] && unit_reads_env_file &&
        grep -Eq '^[[:space:]]*(export[[:space:]]+)?SIGHTLINE_LICENSE=["'"'"']?[A-Za-z0-9]' "$ENV_FILE"
}

# The sightline system user and group: no login shell, home
# /var/lib/sightline (not created), no supplementary group (a unit that
# needs one names it in SupplementaryGroups=).
ensure_user() {
    if ! getent group sightline >/dev/null; then
        groupadd --system sightline
    fi
    if ! getent passwd sightline >/dev/null; then
        shell=/bin/false
        for candidate in /usr/sbin/nologin /sbin/nologin; do
            if [ -x "$candidate" ]; then
                shell=$candidate
                break
            fi
        done
        useradd --system --gid sightline --home-dir /var/lib/sightline --no-create-home \
            --shell "$shell" --comment "Sightline agents" sightline
    fi
}

# The config readable by the agent only (it holds the license), the state
# folder its own. A folder left by an agent run as root is handed over.
ensure_files() {
    install -d -m 0755 /etc/sightline /var/lib/sightline
    if [ -f "$CONF" ]; then
        chgrp sightline "$CONF"
        chmod 0640 "$CONF"
    fi
    if [ ! -d "$STATE" ]; then
        install -d -o sightline -g sightline -m 0750 "$STATE"
    elif [ "$(stat -c %U "$STATE")" != sightline ]; then
        chown -R sightline:sightline "$STATE"
        chmod 0750 "$STATE"
    fi
}

# systemd older than 231 (RHEL 7: 219, Ubuntu 16.04: 229) has no "@"
# syscall groups: there SystemCallFilter=@system-service allows almost
# nothing and, with SystemCallErrorNumber=EPERM, the agent dies at start.
# A drop-in resets the filter on such a systemd (the empty assignment
# resets it on every version); options newer than the systemd it meets
# are only warned about, and StateDirectory= (235) is covered by
# ensure_files making the folder.
OLD_SYSTEMD_DROPIN_DIR="/etc/systemd/system/$UNIT.d"
OLD_SYSTEMD_DROPIN="$OLD_SYSTEMD_DROPIN_DIR/00-sightline-old-systemd.conf"

# The running systemd's version number, empty when unknown.
systemd_version() {
    if has_systemctl; then
        systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9][0-9]*\).*/\1/p'
    fi
}

# Writes the drop-in on a systemd older than 231, removes it otherwise.
fit_unit_to_systemd() {
    version=$(systemd_version)
    if [ -n "$version" ] && [ "$version" -lt 231 ]; then
        install -d -m 0755 "$OLD_SYSTEMD_DROPIN_DIR"
        {
            echo "# Written by the $PACKAGE package: systemd $version has no @ syscall groups"
            echo "# (231 and later do), so the unit's SystemCallFilter= is reset here."
            echo "# Removed on purge (deb) or erase (rpm)."
            echo "[Service]"
            echo "SystemCallFilter="
        } >"$OLD_SYSTEMD_DROPIN"
    else
        remove_old_systemd_dropin
    fi
}

remove_old_systemd_dropin() {
    rm -f "$OLD_SYSTEMD_DROPIN"
    rmdir "$OLD_SYSTEMD_DROPIN_DIR" 2>/dev/null || true
}

daemon_reload() {
    if systemd_running && has_systemctl; then
        systemctl daemon-reload || true
    fi
}

# One line saying why an agent is not started and what to do.
say_no_license() {
    echo "$PACKAGE: installed but not started: no license in $CONF; add license=<key> there, then run: systemctl enable --now $PACKAGE"
}

# After a first install: enable and start, unless an agent has no license.
start_after_install() {
    if [ "$AGENT" = 1 ] && ! has_license; then
        say_no_license
        return 0
    fi
    if ! has_systemctl; then
        echo "$PACKAGE: installed; no systemctl here: run /usr/bin/$PACKAGE from your init system as user sightline"
        return 0
    fi
    systemctl enable --quiet "$UNIT" || true
    if systemd_running; then
        if systemctl start "$UNIT"; then
            echo "$PACKAGE: started; see: systemctl status $PACKAGE"
        else
            echo "$PACKAGE: enabled but failed to start; see: journalctl -u $PACKAGE"
        fi
    else
        echo "$PACKAGE: enabled; not started: systemd is not running here"
    fi
}

# After an upgrade: restart what is running or enabled (the new binary;
# a running one always, never the old, deleted binary), leave the rest as
# the administrator left it.
restart_after_upgrade() {
    if has_systemctl && systemd_running && systemctl is-active --quiet "$UNIT" 2>/dev/null; then
        systemctl try-restart "$UNIT" || echo "$PACKAGE: restart failed; see: journalctl -u $PACKAGE"
        return 0
    fi
    if [ "$AGENT" = 1 ] && ! has_license; then
        say_no_license
        return 0
    fi
    if ! has_systemctl; then
        return 0
    fi
    if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
        if systemd_running; then
            systemctl restart "$UNIT" || echo "$PACKAGE: restart failed; see: journalctl -u $PACKAGE"
        fi
    else
        echo "$PACKAGE: not enabled, so not started; run: systemctl enable --now $PACKAGE"
    fi
}

# deb's remove keeps the config; a later reinstall (postinst configure
# with the old version) enables again what was enabled, as
# deb-systemd-helper does. The mark is root's, beside the state folders.
ENABLED_MARK="/var/lib/sightline/.$NAME.enabled-before-removal"

remember_enabled() {
    rm -f "$ENABLED_MARK"
    if has_systemctl && systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
        install -d -m 0755 /var/lib/sightline
        : >"$ENABLED_MARK"
    fi
}

restore_enabled() {
    if [ -f "$ENABLED_MARK" ]; then
        rm -f "$ENABLED_MARK"
        if has_systemctl; then
            systemctl enable --quiet "$UNIT" || true
        fi
    fi
}

# Before removal: stop and disable (the symlinks would dangle).
stop_and_disable() {
    if ! has_systemctl; then
        return 0
    fi
    if systemd_running; then
        systemctl stop "$UNIT" || true
    fi
    systemctl disable --quiet "$UNIT" 2>/dev/null || true
}

# deb's purge: this product's state, then the user once no Sightline
# package is left (none has a config file or a state folder: a removed but
# not purged package keeps both, and its files' group).
purge_state() {
    rm -rf "$STATE"
    rm -f "$ENABLED_MARK"
    rmdir /var/lib/sightline 2>/dev/null || true
    rmdir /etc/sightline 2>/dev/null || true
    if [ -d /var/lib/sightline ] || ls /etc/sightline/*.conf >/dev/null 2>&1; then
        return 0
    fi
    if getent passwd sightline >/dev/null; then
        userdel sightline || true
    fi
    if getent group sightline >/dev/null; then
        groupdel sightline || true
    fi
}
