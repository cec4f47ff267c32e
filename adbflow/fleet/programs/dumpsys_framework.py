"""dumpsys power / window / activity for the virtual device: minimal, in the real formats.

Why these lines: automation tools grep them (mWakefulness=Awake, Display Power: state=ON,
mCurrentFocus=Window{...}, mFocusedApp=, mResumedActivity / topResumedActivity /
ResumedActivity:, `init=1080x2400 440dpi`), so they carry the device's real state: what
`am start` / `input keyevent` did, the display size and density with `wm` overrides.
"""
from __future__ import annotations

import hashlib

from adbflow.fleet.programs import display
from adbflow.fleet.programs import framework_client as fw
from adbflow.fleet.programs.packages import find, short_component, split_component

LAUNCHER = "com.android.launcher3/.uioverrides.QuickstepLauncher"


def _hid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


def _state() -> dict:
    try:
        return fw.call({"op": "activity"})
    except fw.FrameworkUnavailable:
        return {"focus": LAUNCHER, "awake": True}


def _sdk() -> int:
    try:
        return int(fw.build_props().get("ro.build.version.sdk", "35"))
    except ValueError:
        return 35


def _focus() -> tuple[str, str, str]:
    """(short component, full component, package) of the resumed activity."""
    st = _state()
    pkg, cls = split_component(str(st.get("focus") or LAUNCHER))
    return short_component(pkg, cls), f"{pkg}/{cls}", pkg


def _record(short: str) -> str:
    return f"ActivityRecord{{{_hid('ar' + short)} u0 {short} t{int(_hid('t' + short), 16) % 40 + 2}}}"


def dump_power() -> str:
    st = _state()
    awake = bool(st.get("awake", True))
    level = 80
    try:
        level = int(open("/sys/class/power_supply/battery/capacity").read().strip())
    except (OSError, ValueError):
        pass
    timeout = "60000"
    try:
        timeout = fw.call({"op": "settings", "action": "get", "namespace": "system",
                           "key": "screen_off_timeout"}).get("value") or timeout
    except fw.FrameworkUnavailable:
        pass
    lines = ["POWER MANAGER (dumpsys power)", "", "Power Manager State:", "  mDirty=0x0",
             f"  mWakefulness={'Awake' if awake else 'Asleep'}", "  mWakefulnessChanging=false",
             "  mIsPowered=true", "  mPlugType=2", f"  mBatteryLevel={level}",
             "  mBatteryLevelWhenDreamStarted=0", "  mDockState=0", "  mStayOn=false",
             "  mProximityPositive=false", "  mBootCompleted=true", "  mSystemReady=true",
             "  mHalAutoSuspendModeEnabled=false",
             f"  mHalInteractiveModeEnabled={'true' if awake else 'false'}",
             "  mWakeLockSummary=0x0", f"  mUserActivitySummary={'0x1' if awake else '0x0'}",
             "  mRequestWaitForNegativeProximity=false", "  mSandmanScheduled=false",
             "  mBatteryLevelLow=false", "  mLightDeviceIdleMode=false",
             "  mDeviceIdleMode=false", "  mScreenBrightnessBoostInProgress=false",
             "  mHoldingWakeLockSuspendBlocker=false",
             f"  mHoldingDisplaySuspendBlocker={'true' if awake else 'false'}", "",
             "Settings and Configuration:", f"  mScreenOffTimeoutSetting={timeout}",
             "  mMaximumScreenOffTimeoutFromDeviceAdmin=9223372036854775807 (enforced=false)",
             "  mStayOnWhilePluggedInSetting=0", "",
             f"Display Power: state={'ON' if awake else 'OFF'}"]
    return "\n".join(lines) + "\n"


def dump_window(args: list[str]) -> str:
    short, full, pkg = _focus()
    w, h, d = display.current()
    pw, ph, pd = display.physical()
    win = f"Window{{{_hid('w' + full)} u0 {full}}}"
    section = args[0] if args else "windows"
    app = find(pkg)
    app_uid = app.uid if app is not None else 10062
    lines = [f"WINDOW MANAGER {section.upper()} (dumpsys window {section})"]
    if section in ("displays", "windows", "d", "w"):
        lines += ["  Display: mDisplayId=0 rootTasks=1",
                  f"    init={pw}x{ph} {pd}dpi cur={w}x{h} app={w}x{h - h // 20 - h // 40} "
                  f"rng={w}x{w - w // 20}-{h}x{h - h // 20}",
                  f"  Window #0 {win}:", f"    mDisplayId=0 rootTaskId=1 mSession=Session{{"
                  f"{_hid('s' + pkg)} 0:u0a{app_uid % 100000}}}"]
    lines += [f"  mCurrentFocus={win}", f"  mFocusedApp={_record(short)}",
              "  mInputMethodWindow=null", "  mDisplayFrozen=false"]
    return "\n".join(lines) + "\n"


def dump_activity(args: list[str]) -> str:
    if args[:1] == ["top"]:
        return dump_activity_top()
    short, full, pkg = _focus()
    rec = _record(short)
    sdk = _sdk()
    p = find(pkg)
    uid = p.uid if p else 10062
    task = (f"  * Task{{{_hid('task' + short)} #{rec.rsplit(' t', 1)[1][:-1]} type="
            f"{'home' if full.startswith('com.android.launcher3/') else 'standard'} "
            f"A={uid}:{pkg} U=0 visible=true mode=fullscreen translucent=false sz=1}}")
    lines = ["ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)",
             "Display #0 (activities from top to bottom):", task,
             f"    mLastPausedActivity: {rec}" if sdk < 29 else f"    topResumedActivity={rec}",
             f"    * Hist  #0: {rec}", f"      packageName={pkg} processName={pkg}",
             f"      intent={{act=android.intent.action.MAIN cat=[android.intent.category."
             f"LAUNCHER] flg=0x10200000 cmp={short}}}"]
    if sdk <= 31:
        lines.append(f"    mResumedActivity: {rec}")
    if sdk >= 29:
        lines.append(f"  ResumedActivity: {rec}")
    lines += ["", f"  mFocusedApp={rec}" if sdk < 29 else f"  topDisplayFocusedRootTask=Task"
              f"{{{_hid('task' + short)}}}", f" mCurrentFocus=Window{{{_hid('w' + full)} u0 "
              f"{full}}}"]
    return "\n".join(lines) + "\n"


def dump_activity_top() -> str:
    """`dumpsys activity top`: the resumed task/activity. App processes do not exist on a
    virtual device, so the pid reads `(not running)` as dumpsys prints it then."""
    short, full, pkg = _focus()
    p = find(pkg)
    uid = p.uid if p else 10062
    task_id = _record(short).rsplit(" t", 1)[1][:-1]
    return (f"TASK {uid}:{pkg} id={task_id} userId=0\n"
            f"  ACTIVITY {short} {_hid('ar' + short)} pid=(not running)\n")


def dump_display() -> str:
    w, h, _d = display.current()
    pw, ph, pd = display.physical()
    uid = "local:4619827259835644672"
    view = (f"DisplayViewport{{type=INTERNAL, valid=true, isActive=true, displayId=0, "
            f"uniqueId='{uid}', physicalPort=0, orientation=0, logicalFrame=Rect(0, 0 - {w}, "
            f"{h}), physicalFrame=Rect(0, 0 - {w}, {h}), deviceWidth={w}, deviceHeight={h}}}")
    lines = ["DISPLAY MANAGER (dumpsys display)", "  mOnlyCore=false", "  mSafeMode=false",
             "  mPendingTraversal=false", f"  mViewports=[{view}]", "",
             "Display Devices: size=1",
             f"  DisplayDeviceInfo{{\"Built-in Screen\": uniqueId=\"{uid}\", {pw} x {ph}, "
             f"modeId 1, defaultModeId 1, supportedModes [{{id=1, width={pw}, height={ph}, "
             f"fps=60.0}}], density {pd}, touch INTERNAL, rotation 0, type INTERNAL, "
             "state ON, FLAG_DEFAULT_DISPLAY, FLAG_ROTATES_WITH_CONTENT, FLAG_SECURE}",
             "  mCurrentOrientation=0", f"  mCurrentDisplayRect=Rect(0, 0 - {w}, {h})"]
    return "\n".join(lines) + "\n"


def dump_package(args: list[str]) -> str:
    names = [a for a in args if not a.startswith("-")]
    p = find(names[0]) if names else None
    if p is None:
        return ""
    sdk = _sdk()
    code_path = p.apk.rsplit("/", 1)[0]
    stamp = "2009-01-01 00:00:00"
    sig = _hid("sig" + p.name)[:8]
    lines = ["Packages:", f"  Package [{p.name}] ({_hid(p.name)}):", f"    userId={p.uid}",
             f"    pkg=Package{{{_hid(p.name)} {p.name}}}", f"    codePath={code_path}",
             f"    resourcePath={code_path}", f"    versionCode={sdk} minSdk={sdk} "
             f"targetSdk={sdk}", f"    versionName={fw.build_props().get('ro.build.version.release', '')}",
             "    flags=[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA ]",
             "    pkgFlags=[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA ]",
             f"    timeStamp={stamp}", f"    firstInstallTime={stamp}",
             f"    lastUpdateTime={stamp}",
             f"    signatures=PackageSignatures{{{_hid('ps' + p.name)} version:3, "
             f"signatures:[{sig}], past signatures:[]}}"]
    return "\n".join(lines) + "\n"


#: dumpsys services answered here (the kernel-file ones stay in dumpsys.py)
DUMPERS = {"power": lambda args: dump_power(), "window": dump_window,
           "activity": dump_activity, "display": lambda args: dump_display(),
           "package": dump_package}


def listing(base: tuple[str, ...]) -> str:
    """`dumpsys -l`: every service, sorted, as ServiceManager lists them."""
    return "Currently running services:\n" + "".join(
        f"  {s}\n" for s in sorted(set(base) | set(DUMPERS)))
