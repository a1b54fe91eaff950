# shellcheck shell=bash
# A directory of extra apt keys to trust (empty: none).
export DIB_ADD_APT_KEYS=${DIB_ADD_APT_KEYS:-}
