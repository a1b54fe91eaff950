# shellcheck shell=bash
# Boot loader settings, with diskimage-builder's names and defaults.

# Kernel arguments every boot entry gets (an empty value means the default).
export DIB_BOOTLOADER_DEFAULT_CMDLINE=${DIB_BOOTLOADER_DEFAULT_CMDLINE:-"nofb nomodeset gfxpayload=text"}
# The serial console for the kernel, e.g. ttyS1,9600. Empty: the architecture's
# usual port (ttyS0,115200 on x86, ttyAMA0,115200 on arm64); "none": no serial console.
export DIB_BOOTLOADER_SERIAL_CONSOLE=${DIB_BOOTLOADER_SERIAL_CONSOLE:-}
# The virtual terminal console; unset means tty0, set but empty means none.
if [ -z "${DIB_BOOTLOADER_VIRTUAL_TERMINAL+set}" ]; then
    export DIB_BOOTLOADER_VIRTUAL_TERMINAL=tty0
else
    export DIB_BOOTLOADER_VIRTUAL_TERMINAL
fi
# GRUB's own menu on the serial line as well as the screen.
export DIB_BOOTLOADER_USE_SERIAL_CONSOLE=${DIB_BOOTLOADER_USE_SERIAL_CONSOLE:-True}
# "no_timer_check" on the kernel command line (helps virtual machines).
export DIB_NO_TIMER_CHECK=${DIB_NO_TIMER_CHECK:-True}
export DIB_GRUB_TIMEOUT=${DIB_GRUB_TIMEOUT:-5}
export DIB_GRUB_TIMEOUT_STYLE=${DIB_GRUB_TIMEOUT_STYLE:-menu}
# True when the image (or another element) brings its own GRUB packages.
export DIB_SKIP_GRUB_PACKAGE_INSTALL=${DIB_SKIP_GRUB_PACKAGE_INSTALL:-False}
