"""Virtual Android devices that the real adb server accepts (see README, "Virtual fleet")."""
