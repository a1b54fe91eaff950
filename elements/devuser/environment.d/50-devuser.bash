# shellcheck shell=bash
# The development user's settings (diskimage-builder's names and defaults).
export DIB_DEV_USER_USERNAME=${DIB_DEV_USER_USERNAME:-devuser}
export DIB_DEV_USER_GROUPS=${DIB_DEV_USER_GROUPS:-}
export DIB_DEV_USER_SHELL=${DIB_DEV_USER_SHELL:-}
export DIB_DEV_USER_PWDLESS_SUDO=${DIB_DEV_USER_PWDLESS_SUDO:-}
export DIB_DEV_USER_AUTHORIZED_KEYS=${DIB_DEV_USER_AUTHORIZED_KEYS:-}
export DIB_DEV_USER_PASSWORD=${DIB_DEV_USER_PASSWORD:-}
