# shellcheck shell=bash
# Only the on-disk NoCloud source (see install.d/06-nocloud-seed).
export DIB_CLOUD_INIT_DATASOURCES=NoCloud
