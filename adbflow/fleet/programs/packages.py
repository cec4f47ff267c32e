"""The packages a virtual device has installed: the AOSP system apps a stock build ships.

Why a fixed list: the virtual device runs no APKs (it cannot install any: `pm install`
refuses clearly), but automation tools look up packages, their APK paths and launcher
activities. Paths are where AOSP places them (/system/priv-app, /system/app,
/system/framework, /product/...). The uid is the app's uid on user 0.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    name: str
    apk: str
    uid: int
    activity: str = ""    # launcher/main activity, "" if none

    @property
    def component(self) -> str:
        return f"{self.name}/{self.activity}" if self.activity else ""


PACKAGES: tuple[Package, ...] = (
    Package("android", "/system/framework/framework-res.apk", 1000),
    Package("com.android.settings", "/system/priv-app/Settings/Settings.apk", 1000, ".Settings"),
    Package("com.android.shell", "/system/priv-app/Shell/Shell.apk", 2000),
    Package("com.android.systemui", "/system_ext/priv-app/SystemUI/SystemUI.apk", 10061),
    Package("com.android.launcher3", "/system_ext/priv-app/Launcher3QuickStep/"
            "Launcher3QuickStep.apk", 10062, ".uioverrides.QuickstepLauncher"),
    Package("com.android.providers.settings", "/system/priv-app/SettingsProvider/"
            "SettingsProvider.apk", 1000),
    Package("com.android.providers.media.module", "/apex/com.android.mediaprovider/priv-app/"
            "MediaProvider/MediaProvider.apk", 10040),
    Package("com.android.camera2", "/system/app/Camera2/Camera2.apk", 10070,
            "com.android.camera.CameraLauncher"),
    Package("com.android.documentsui", "/system/priv-app/DocumentsUI/DocumentsUI.apk", 10050,
            ".LauncherActivity"),
    Package("com.android.gallery3d", "/system/app/Gallery2/Gallery2.apk", 10071,
            ".app.GalleryActivity"),
    Package("com.android.inputmethod.latin", "/system/app/LatinIME/LatinIME.apk", 10072),
    Package("com.android.phone", "/system/priv-app/TeleService/TeleService.apk", 1001),
    Package("com.android.chrome", "/product/app/Chrome/Chrome.apk", 10080,
            "com.google.android.apps.chrome.Main"),
    Package("com.android.deskclock", "/system/app/DeskClock/DeskClock.apk", 10073,
            ".DeskClock"),
)
BY_NAME = {p.name: p for p in PACKAGES}


def find(name: str) -> Package | None:
    return BY_NAME.get(name)


def split_component(text: str) -> tuple[str, str]:
    """`pkg/.Cls` or `pkg/full.Cls` -> (pkg, full class name)."""
    pkg, _, cls = text.partition("/")
    if cls.startswith("."):
        cls = pkg + cls
    return pkg, cls


def short_component(pkg: str, cls: str) -> str:
    """ComponentName.flattenToShortString: `pkg/.Cls` when the class is inside pkg."""
    return f"{pkg}/{cls[len(pkg):]}" if cls.startswith(pkg + ".") else f"{pkg}/{cls}"
