r"""Run the FantastIC4 runtime on a Cortex-M instruction set: cross-build the export's bare-metal
harness, execute every golden vector in an emulator, count instructions exactly, measure flash,
RAM and stack, and check C-on-Arm == Python simulator == TFLM bit for bit.

Pipeline (``simulate(out_dir, cpu)``, behind ``ecqx-simulate DIR --cortex-m m4|m33``):

1. ``make cortex-m CPU=m4|m33 O=<temp>`` in the export folder (arm-none-eabi-gcc, ``-Wall
   -Wextra -Werror``, the export's Makefile): an ELF for QEMU's ``mps2-an386`` (Cortex-M4) or
   ``mps2-an505`` (Cortex-M33) memory map and its link map.
2. The ELF's loadable segments go into a `unicorn <https://www.unicorn-engine.org>`_ Cortex-M
   CPU (``UC_MODE_THUMB | UC_MODE_MCLASS``, CPU model M4 or M33). ``f4_prepare`` is called once
   and ``f4_invoke`` once per golden vector on the harness's own buffers (``g_f4_harness_*``),
   exactly as the harness ``main`` does on a board.
3. **Instruction count** (instructions, not cycles): a ``UC_HOOK_BLOCK`` hook adds, for every
   executed translation block, the number of Thumb instructions in it (decoded from the block's
   bytes: a halfword whose top five bits are ``0b11101``, ``0b11110`` or ``0b11111`` starts a
   32-bit instruction). This counts condition-failed instructions inside IT blocks, which the
   per-instruction hook (``UC_HOOK_CODE``) does not report. A hook only sees blocks translated
   after it was added, so the translation cache is flushed (``ctl_flush_tb``) after adding it.
   The count covers ``f4_invoke`` from its first instruction to its return, callees included.
4. **Stack peak**: the stack region is filled with a pattern before a call and scanned after it;
   the peak is the call-time SP minus the lowest overwritten word.
5. **Flash and RAM** from the link map: the input sections of ``f4_runtime.o`` plus the C library
   members it pulled in (``memset``, ...) are the runtime's code; the blob is its C array; RAM is
   the ``f4_model`` the caller keeps (blob state), the scratch buffer and the stack peak.

:func:`qemu_cross_check` runs the same ELF's ``main`` in ``qemu-system-arm -icount
shift=6,align=off,sleep=off``: SysTick ticks around each ``f4_invoke`` are proportional to executed
instructions; the ratio is calibrated on the target with a loop of known length and the two reads'
overhead with an empty call (see ``cortex_m_main.c``), giving a second, independent count.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "CortexM",
    "CPUS",
    "ARM_CC",
    "QEMU",
    "TOOLCHAIN_HINT",
    "missing_tools",
    "build_harness",
    "thumb_instruction_count",
    "ArmEmulator",
    "map_sizes",
    "runtime_flash",
    "run_golden",
    "qemu_cross_check",
    "simulate",
    "simulate_export",
    "summary_rows",
    "report_path",
]

log = logging.getLogger(__name__)

ARM_CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
#: one line saying what to install when the Cortex-M tools are missing
TOOLCHAIN_HINT = ("the Cortex-M check needs arm-none-eabi-gcc with newlib (Debian/Ubuntu: apt-get install "
                  "gcc-arm-none-eabi libnewlib-arm-none-eabi) and the Python packages unicorn and pyelftools "
                  "(pip install 'ecqx-tf[cortex-m]'); qemu-system-arm (apt-get install qemu-system-arm) is "
                  "optional, for the QEMU cross-check")


@dataclasses.dataclass(frozen=True)
class CortexM:
    """One supported core: the gcc ``-mcpu``, the QEMU board whose memory map the linker script
    follows, and unicorn's CPU model constant name."""

    name: str
    mcpu: str
    board: str
    unicorn_model: str


#: ``--cortex-m`` choices (the export Makefile's ``CPU=`` values)
CPUS: Dict[str, CortexM] = {
    "m4": CortexM("m4", "cortex-m4", "mps2-an386", "UC_CPU_ARM_CORTEX_M4"),
    "m33": CortexM("m33", "cortex-m33", "mps2-an505", "UC_CPU_ARM_CORTEX_M33"),
}


def _cpu(cpu: str) -> CortexM:
    if cpu not in CPUS:
        raise ValueError(f"cortex-m cpu must be one of {', '.join(CPUS)}, got {cpu!r}")
    return CPUS[cpu]


def missing_tools(qemu: bool = False) -> Optional[str]:
    """``None`` when the Cortex-M check can run here, else :data:`TOOLCHAIN_HINT` naming what is
    missing (arm-none-eabi-gcc and newlib's nano specs, unicorn, pyelftools; ``qemu`` also
    requires qemu-system-arm)."""
    missing = []
    gcc = shutil.which(ARM_CC)
    if gcc is None:
        missing.append(ARM_CC)
    else:
        spec = subprocess.run([gcc, "-print-file-name=nano.specs"], capture_output=True, text=True)
        if spec.returncode != 0 or not Path(spec.stdout.strip()).is_file():
            missing.append("newlib (nano.specs)")
    if shutil.which("make") is None:
        missing.append("make")
    for module in ("unicorn", "elftools"):
        try:
            __import__(module)
        except ImportError:
            missing.append("pyelftools" if module == "elftools" else module)
    if qemu and shutil.which(QEMU) is None:
        missing.append(QEMU)
    if not missing:
        return None
    return f"missing {', '.join(missing)}: {TOOLCHAIN_HINT}"


# ---------------------------------------------------------------------------------------------
# build


def build_harness(export_dir: Path, cpu: str, build_dir: Path, opt: str = "-O2") -> Tuple[Path, Path]:
    """``make cortex-m CPU=cpu O=build_dir ARM_OPT=opt`` in the export folder (nothing is written
    there). Returns (ELF, link map).

    Raises:
        ValueError: an unknown ``cpu`` or an ``opt`` other than -O0..-O3, -Os, -Oz.
        FileNotFoundError: the Arm toolchain or make is missing (the message says what to install).
        RuntimeError: the build fails (compiler output included).
    """
    c = _cpu(cpu)
    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz"):
        raise ValueError(f"opt must be one of -O0, -O1, -O2, -O3, -Os, -Oz, got {opt!r}")
    if shutil.which(ARM_CC) is None or shutil.which("make") is None:
        raise FileNotFoundError(missing_tools() or TOOLCHAIN_HINT)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["make", "-s", "-C", str(export_dir), "cortex-m", f"CPU={c.name}", f"O={build_dir.resolve()}",
                        f"ARM_OPT={opt}"], capture_output=True, text=True)
    elf = build_dir / f"f4_cortex_m_{c.name}.elf"
    if r.returncode != 0 or not elf.is_file():
        raise RuntimeError(f"Cortex-M harness build failed ({ARM_CC}, CPU={c.name}, {opt}):\n{r.stdout}{r.stderr}")
    return elf, build_dir / f"f4_cortex_m_{c.name}.map"


# ---------------------------------------------------------------------------------------------
# the emulator


def thumb_instruction_count(code: bytes) -> int:
    """Instructions in a run of Thumb code: a halfword whose top five bits are 0b11101, 0b11110
    or 0b11111 is the first half of a 32-bit instruction, any other is a 16-bit instruction."""
    n, i = 0, 0
    while i + 1 < len(code):
        hw = code[i] | (code[i + 1] << 8)
        i += 4 if (hw >> 11) >= 0b11101 else 2
        n += 1
    return n


_PAINT = 0xC5A5A5C5


class ArmEmulator:
    """A unicorn Cortex-M CPU holding an ELF of the harness, with an exact instruction counter.

    ``call(name, *args)`` runs a function with the AAPCS (four arguments in r0-r3, more on the
    stack) from the top of the harness's stack until it returns, and returns
    ``(r0, instructions, stack_bytes)``.
    """

    def __init__(self, elf: Path, cpu: str):
        from elftools.elf.elffile import ELFFile
        from unicorn import UC_ARCH_ARM, UC_HOOK_BLOCK, UC_MODE_MCLASS, UC_MODE_THUMB, Uc, arm_const

        c = _cpu(cpu)
        self.cpu = c
        with open(elf, "rb") as f:
            e = ELFFile(f)
            self.symbols: Dict[str, Tuple[int, int]] = {}
            for s in e.get_section_by_name(".symtab").iter_symbols():
                if s.name and s.entry["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
                    self.symbols.setdefault(s.name, (int(s["st_value"]), int(s["st_size"])))
            segments = [(int(seg["p_paddr"]), int(seg["p_vaddr"]), seg.data(), int(seg["p_memsz"]))
                        for seg in e.iter_segments() if seg["p_type"] == "PT_LOAD"]
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(getattr(arm_const, c.unicorn_model))
        self._arm = arm_const
        self.flash = (self.addr("__flash_origin"), self.addr("__flash_length"))
        self.ram = (self.addr("__ram_origin"), self.addr("__ram_length"))
        for base, size in (self.flash, self.ram):
            self.uc.mem_map(base, size)
        image = bytearray(self.flash[1])
        for paddr, vaddr, data, _ in segments:
            if data:
                self.uc.mem_write(paddr, data)
                if self.flash[0] <= paddr < self.flash[0] + self.flash[1]:
                    image[paddr - self.flash[0]: paddr - self.flash[0] + len(data)] = data
                if vaddr != paddr:  # .data: what the start-up code copies from flash to RAM
                    self.uc.mem_write(vaddr, data)
        self._code = bytes(image)
        self.stack = (self.addr("__stack_limit"), self.addr("__stack_top"))
        self._stop = self.addr("Reset_Handler") & ~1
        self._block_counts: Dict[Tuple[int, int], int] = {}
        self.instructions = 0
        self.last_stack = 0
        #: instructions per function of the last calls when ``profile`` is set (by symbol ranges)
        self.profile: Optional[Dict[str, int]] = None
        self._funcs = sorted((a & ~1, (a & ~1) + max(n, 1), name) for name, (a, n) in self.symbols.items()
                             if n > 0 and self.flash[0] <= a < self.flash[0] + self.flash[1])
        self._block_func: Dict[int, str] = {}
        self.uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        self.uc.ctl_flush_tb()  # blocks translated before the hook would not report to it

    def addr(self, name: str) -> int:
        if name not in self.symbols:
            raise KeyError(f"symbol {name!r} not in the harness ELF")
        return self.symbols[name][0]

    def size(self, name: str) -> int:
        return self.symbols[name][1]

    def _on_block(self, uc, address: int, size: int, user_data) -> None:
        key = (address, size)
        n = self._block_counts.get(key)
        if n is None:
            off = address - self.flash[0]
            n = thumb_instruction_count(self._code[off: off + size])
            self._block_counts[key] = n
        self.instructions += n
        if self.profile is not None:
            f = self._block_func.get(address)
            if f is None:
                import bisect

                i = bisect.bisect_right(self._funcs, (address, float("inf"), "")) - 1
                f = self._funcs[i][2] if i >= 0 and self._funcs[i][0] <= address < self._funcs[i][1] else "?"
                self._block_func[address] = f
            self.profile[f] = self.profile.get(f, 0) + n

    def read(self, address: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(address, n))

    def write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, bytes(data))

    def call(self, name: str, *args: int, measure_stack: bool = False) -> Tuple[int, int, int]:
        """(r0 as int32, instructions executed in the call, stack bytes used or 0)."""
        a = self._arm
        regs = (a.UC_ARM_REG_R0, a.UC_ARM_REG_R1, a.UC_ARM_REG_R2, a.UC_ARM_REG_R3)
        extra = [int(v) & 0xFFFFFFFF for v in args[4:]]
        sp = (self.stack[1] - 4 * len(extra)) & ~7
        for i, v in enumerate(extra):
            self.write(sp + 4 * i, struct.pack("<I", v))
        if measure_stack:
            self.write(self.stack[0], struct.pack("<I", _PAINT) * ((sp - self.stack[0]) // 4))
        for reg, v in zip(regs, args[:4]):
            self.uc.reg_write(reg, int(v) & 0xFFFFFFFF)
        self.uc.reg_write(a.UC_ARM_REG_SP, sp)
        self.uc.reg_write(a.UC_ARM_REG_LR, self._stop | 1)
        self.instructions = 0
        self.uc.emu_start(self.addr(name) | 1, self._stop)
        count = self.instructions
        used = 0
        if measure_stack:
            words = np.frombuffer(self.read(self.stack[0], sp - self.stack[0]), "<u4")
            touched = np.flatnonzero(words != _PAINT)
            used = sp - (self.stack[0] + 4 * int(touched[0])) if len(touched) else 0
        r0 = self.uc.reg_read(a.UC_ARM_REG_R0)
        return (r0 - (1 << 32) if r0 >= 1 << 31 else r0), count, used


    def run_blob(self, blob: bytes, x: np.ndarray, scratch_bytes: int) -> Tuple[np.ndarray, np.ndarray, int]:
        """Any blob on the target: it is copied into the RAM above the harness's stack (with the
        inputs, outputs and scratch), ``f4_prepare`` runs once and ``f4_invoke`` per row of ``x``.
        Returns (int8 outputs ``[n, out]``, instructions per inference, f4_prepare's status);
        ``last_stack`` then holds f4_invoke's stack peak (first input). Used by the tests and the
        benchmark to run many blobs with one ELF."""
        x = np.asarray(x, np.int8).reshape(len(x), -1)
        heap = (self.stack[1] + 15) & ~15
        blob_at = heap
        x_at = (blob_at + len(blob) + 15) & ~15
        y_at = (x_at + x.shape[1] + 15) & ~15
        scr_at = (y_at + 65536 + 15) & ~15
        if scr_at + scratch_bytes > self.ram[0] + self.ram[1]:
            raise ValueError(f"blob of {len(blob)} bytes and {scratch_bytes} bytes of scratch do not fit in the "
                             f"emulated RAM above the stack ({self.ram[0] + self.ram[1] - heap} bytes)")
        self.write(blob_at, bytes(blob))
        model = self.addr("g_f4_harness_model")
        st, _, _ = self.call("f4_prepare", blob_at, len(blob), model)
        if st != 0:
            return np.zeros((0, 0), np.int8), np.zeros(0, np.int64), st
        n_out = struct.unpack_from("<H", self.read(model + 4, 2))[0]  # f4_model.output_features
        outputs = np.zeros((len(x), n_out), np.int8)
        counts = np.zeros(len(x), np.int64)
        for i, row in enumerate(x):
            self.write(x_at, row.tobytes())
            st, n, used = self.call("f4_invoke", model, x_at, y_at, scr_at, scratch_bytes, measure_stack=(i == 0))
            if st != 0:
                raise RuntimeError(f"f4_invoke on the Arm target returned status {st} on input {i}")
            if i == 0:
                self.last_stack = used
            outputs[i] = np.frombuffer(self.read(y_at, n_out), np.int8)
            counts[i] = n
        return outputs, counts, 0


# ---------------------------------------------------------------------------------------------
# sizes from the link map


_MAP_INPUT = re.compile(r"^ (\.\S+|COMMON)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def map_sizes(map_path: Path) -> Dict[str, Dict[str, int]]:
    """Bytes per object file (``f4_runtime.o``, ``<name>_f4.o``, ..., library members as
    ``libc_nano.a(lib_a-memset.o)``) and output section (``flash``: ``.isr_vector``, ``.text``
    (code and read-only data), ``.data`` initial values; ``ram``: ``.data``, ``.bss``), read from
    a GNU ld link map after ``--gc-sections``. Also ``"__pulled_by__"``: library member -> the
    object whose reference pulled it in."""
    text = Path(map_path).read_text()
    head, _, body = text.partition("Linker script and memory map")
    pulled: Dict[str, str] = {}
    lines = head.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\S+\.a)\((\S+)\)$", line.strip())
        if m and i + 1 < len(lines):
            by = lines[i + 1].strip().split(" (")[0]
            pulled[f"{Path(m.group(1)).name}({m.group(2)})"] = Path(by).name
    sizes: Dict[str, Dict[str, int]] = {}
    out_section = None
    rows = body.splitlines()
    i = 0
    while i < len(rows):
        line = rows[i]
        if line and not line.startswith(" "):
            out_section = line.split()[0]
        joined = line
        if re.match(r"^ \.\S+$", line) and i + 1 < len(rows):  # a long input-section name: values on the next line
            joined = line + rows[i + 1]
            i += 1
        m = _MAP_INPUT.match(joined)
        if m and out_section in (".isr_vector", ".text", ".data", ".bss"):
            size = int(m.group(3), 16)
            src = m.group(4).strip()
            am = re.match(r"^(\S+\.a)\((\S+)\)$", src)
            key = f"{Path(am.group(1)).name}({am.group(2)})" if am else Path(src).name
            d = sizes.setdefault(key, {"flash": 0, "ram": 0})
            if out_section in (".isr_vector", ".text", ".data"):
                d["flash"] += size
            if out_section in (".data", ".bss"):
                d["ram"] += size
        i += 1
    sizes["__pulled_by__"] = pulled  # type: ignore[assignment]
    return sizes


def runtime_flash(sizes: Dict[str, Dict[str, int]]) -> Tuple[int, int, List[str]]:
    """(runtime code + constants bytes, runtime RAM bytes, library members counted with it)."""
    pulled = sizes.get("__pulled_by__", {})
    rt = sizes.get("f4_runtime.o", {"flash": 0, "ram": 0})
    libs = sorted(k for k, by in pulled.items() if by == "f4_runtime.o" and k in sizes)
    flash = rt["flash"] + sum(sizes[k]["flash"] for k in libs)
    ram = rt["ram"] + sum(sizes[k]["ram"] for k in libs)
    return flash, ram, libs


# ---------------------------------------------------------------------------------------------
# running the golden vectors


def _load_export(out: Path) -> Tuple[Dict[str, Any], np.ndarray, bytes]:
    mpath = out / "fantastic4.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{str(out)!r} is not a fantastic4 export (fantastic4.json missing)")
    manifest = json.loads(mpath.read_text())
    g = manifest["golden"]
    x = np.fromfile(out / g["inputs"], np.int8).reshape(-1, g["input_features"])
    blob = (out / manifest["blob"]).read_bytes()
    return manifest, x, blob


def run_golden(out_dir: Path, cpu: str = "m4", opt: str = "-O2", build_dir: Optional[Path] = None,
               samples: Optional[int] = None) -> Dict[str, Any]:
    """Build the harness and run the golden vectors (all, or the first ``samples``) through
    ``f4_invoke`` in the emulator.

    Returns a dict with ``outputs`` (int8 ``[n, out]``), ``instructions`` (per inference),
    ``prepare`` (instructions, stack), ``stack`` peaks, ``flash`` / ``ram`` breakdowns, and the
    ELF / map paths (inside ``build_dir``, a temporary folder when None: then removed).
    """
    from firmware_export.fantastic4 import format as f4format

    out = Path(out_dir)
    manifest, x, blob = _load_export(out)
    if samples is not None:
        x = x[: int(samples)]
    tmp = None
    if build_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="f4_cortex_m_")
        build_dir = Path(tmp.name)
    try:
        elf, map_path = build_harness(out, cpu, Path(build_dir), opt)
        emu = ArmEmulator(elf, cpu)
        name = manifest["name"]
        blob_sym = f"g_{name}_f4_model_data"
        blob_addr = emu.addr(blob_sym)
        if emu.read(blob_addr, len(blob)) != blob:
            raise RuntimeError(f"the harness's {blob_sym} differs from {manifest['blob']}: rebuild the export")
        model = emu.addr("g_f4_harness_model")
        st, prep_n, prep_stack = emu.call("f4_prepare", blob_addr, len(blob), model, measure_stack=True)
        if st != 0:
            raise RuntimeError(f"f4_prepare on the Arm target returned status {st}")
        scratch_bytes = f4format.read_blob(blob).required_scratch()
        xin, yout, scr = (emu.addr(s) for s in ("g_f4_harness_input", "g_f4_harness_output", "g_f4_harness_scratch"))
        n_out = manifest["golden"]["output_features"]
        outputs = np.zeros((len(x), n_out), np.int8)
        counts = np.zeros(len(x), np.int64)
        invoke_stack = 0
        for i, row in enumerate(x):
            emu.write(xin, row.astype(np.int8).tobytes())
            st, n, used = emu.call("f4_invoke", model, xin, yout, scr, scratch_bytes, measure_stack=(i == 0))
            if st != 0:
                raise RuntimeError(f"f4_invoke on the Arm target returned status {st} on golden vector {i}")
            invoke_stack = max(invoke_stack, used)
            counts[i] = n
            outputs[i] = np.frombuffer(emu.read(yout, n_out), np.int8)
        sizes = map_sizes(map_path)
        rt_flash, rt_ram, libs = runtime_flash(sizes)
        blob_flash = sizes.get(f"{name}_f4.o", {"flash": 0})["flash"]
        model_bytes = emu.size("g_f4_harness_model")
        result = {
            "cpu": cpu, "core": CPUS[cpu].mcpu, "board_memory_map": CPUS[cpu].board,
            "compiler": f"{ARM_CC} -mcpu={CPUS[cpu].mcpu} -mthumb {opt}",
            "samples": int(len(x)),
            "outputs": outputs,
            "instructions": counts,
            "prepare": {"instructions": int(prep_n), "stack_bytes": int(prep_stack)},
            "flash": {"runtime_code": int(rt_flash), "blob": int(blob_flash), "total": int(rt_flash + blob_flash),
                      "runtime_library_members": libs},
            "ram": {"blob_state_f4_model": int(model_bytes), "scratch": int(scratch_bytes),
                    "stack_peak_invoke": int(invoke_stack), "stack_peak_prepare": int(prep_stack),
                    "runtime_static": int(rt_ram),
                    "total_invoke": int(model_bytes + scratch_bytes + invoke_stack + rt_ram)},
            "elf": str(elf), "map": str(map_path),
        }
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


# ---------------------------------------------------------------------------------------------
# second method: QEMU -icount + SysTick


_QEMU_CAL = re.compile(r"calibration loop 1000 (\d+) loop 11000 (\d+) empty (\d+) ticks")


def qemu_cross_check(elf: Path, cpu: str, timeout: float = 600.0) -> Dict[str, Any]:
    """Run the harness ``main`` in ``qemu-system-arm -icount shift=6,align=off,sleep=off`` with
    semihosting and turn the SysTick ticks of each ``f4_invoke`` into instructions:
    ``ticks_per_instruction`` = (ticks of 11000 loop iterations - ticks of 1000) / 20000 (two
    instructions per iteration); ``instructions = (ticks - empty_ticks) / ticks_per_instruction``
    where ``empty_ticks`` is an empty call between the same two reads. Returns the per-sample
    instructions (float), outputs and the harness's own mismatch line.

    Raises:
        FileNotFoundError: qemu-system-arm is missing.
        RuntimeError: QEMU fails or prints something unexpected.
    """
    c = _cpu(cpu)
    if shutil.which(QEMU) is None:
        raise FileNotFoundError(f"{QEMU} not found: {TOOLCHAIN_HINT}")
    r = subprocess.run([QEMU, "-M", c.board, "-nographic", "-semihosting-config", "enable=on,target=native",
                        "-icount", "shift=6,align=off,sleep=off", "-kernel", str(elf)],
                       capture_output=True, text=True, timeout=timeout)
    text = r.stdout + r.stderr  # semihosting output goes to stderr when stdout is not a terminal
    cal = _QEMU_CAL.search(text)
    if cal is None:
        raise RuntimeError(f"{QEMU} run failed (exit {r.returncode}):\n{text[-2000:]}")
    t1000, t11000, t_empty = (int(v) for v in cal.groups())
    ratio = (t11000 - t1000) / 20000.0
    ticks, outputs = [], []
    for line in text.splitlines():
        if line.startswith("s "):
            _, _, t, hexout = line.split()
            ticks.append(int(t))
            outputs.append(np.frombuffer(bytes.fromhex(hexout), np.int8))
    ticks_a = np.asarray(ticks, np.float64)
    done = [l for l in text.splitlines() if "checked" in l]
    return {
        "board": c.board, "ticks_per_instruction": ratio, "empty_call_ticks": t_empty,
        "instructions": (ticks_a - t_empty) / ratio,
        "outputs": np.stack(outputs) if outputs else np.zeros((0, 0), np.int8),
        "exit_code": r.returncode, "summary": done[-1] if done else "",
    }


# ---------------------------------------------------------------------------------------------
# the whole check


def report_path(out_dir: Path, cpu: str) -> Path:
    """Where :func:`simulate` writes its report: ``<out_dir>/cortex_m_<cpu>.json``."""
    return Path(out_dir) / f"cortex_m_{_cpu(cpu).name}.json"


def simulate(out_dir: Path, cpu: str = "m4", opt: str = "-O2", samples: Optional[int] = None,
             write_report: bool = True) -> Dict[str, Any]:
    """The ``--cortex-m`` check: :func:`run_golden` on every golden vector (or the first
    ``samples``), compared bit for bit with the Python simulator and the TFLM interpreter;
    instructions per inference (mean, min, max; instructions, not cycles) and per executed
    addition (the simulator's op count), flash and RAM. Writes :func:`report_path` (JSON) unless
    ``write_report`` is False.

    Raises:
        ValueError: an unknown ``cpu`` / ``opt``.
        FileNotFoundError: not a fantastic4 export, or the tools are missing (what to install).
        RuntimeError: the harness does not build or the runtime fails on the target.
    """
    from ecqx_tf.io import atomic_write_json
    from firmware_export.fantastic4 import simulate as f4sim
    from firmware_export.fantastic4.target import tflm_reference

    _cpu(cpu)
    missing = missing_tools()
    if missing:
        raise FileNotFoundError(missing)
    out = Path(out_dir)
    manifest, x, blob = _load_export(out)
    if samples is not None:
        x = x[: int(samples)]
    res = run_golden(out, cpu, opt, samples=samples)
    py, counts, _ = f4sim.run_with_counts(blob, x)
    tflm = tflm_reference((out / manifest["tflite"]).read_bytes(), x)
    arm = res["outputs"]
    ops = sum(counts, f4sim.OpCounts())
    instr = res["instructions"].astype(np.float64)
    adds = float(ops.accumulate_adds + ops.product_adds)
    layouts = [r["layout"] for r in manifest["layers"]]
    report = {
        "target": "fantastic4",
        "cpu": cpu,
        "core": res["core"],
        "board_memory_map": res["board_memory_map"],
        "compiler": res["compiler"],
        "counting": "unicorn UC_HOOK_BLOCK, Thumb instructions per executed translation block, f4_invoke entry "
                    "to return (instructions, not cycles)",
        "layouts": layouts,
        "samples": res["samples"],
        "arm_equals_python": bool(np.array_equal(arm, py)),
        "python_equals_tflm": bool(np.array_equal(py, tflm)),
        "mismatching_samples": {"arm_vs_python": int(np.any(arm != py, axis=1).sum()),
                                "python_vs_tflm": int(np.any(py != tflm, axis=1).sum())},
        "instructions_per_inference": {"mean": float(instr.mean()), "min": int(instr.min()), "max": int(instr.max()),
                                       "golden_0_4_mean": float(instr[:5].mean())},
        "additions_per_inference": adds,
        "multiplications_per_inference": float(ops.multiplies),
        "instructions_per_addition": float(instr.mean() / adds) if adds else None,
        "prepare": res["prepare"],
        "flash_bytes": res["flash"],
        "ram_bytes": res["ram"],
    }
    report["ok"] = report["arm_equals_python"] and report["python_equals_tflm"]
    if write_report:
        atomic_write_json(report_path(out, cpu), report)
        report["report"] = str(report_path(out, cpu))
    return report


def simulate_export(out_dir: Path, cpu: str, target: str, opt: str = "-O2") -> Dict[str, Any]:
    """``ecqx-simulate DIR --cortex-m CPU``: :func:`simulate` for a fantastic4 export.

    Raises:
        ValueError: ``target`` (the manifest's) is not ``fantastic4``, or an unknown ``cpu``.
        FileNotFoundError: the Arm toolchain or the emulator packages are missing (what to install).
    """
    if target != "fantastic4":
        raise ValueError(f"--cortex-m runs the FantastIC4 runtime; {str(out_dir)!r} is a {target!r} export "
                         "(export with --target fantastic4)")
    return simulate(out_dir, cpu, opt)


def summary_rows(report: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The report as (label, text) rows for the command line."""
    ipi = report["instructions_per_inference"]
    fl, ram = report["flash_bytes"], report["ram_bytes"]
    mism = report["mismatching_samples"]
    rows = [
        ("cortex-m", f"{report['core']} ({report['board_memory_map']} memory map, unicorn), {report['compiler']}"),
        ("layouts", ", ".join(report["layouts"])),
        ("arm == python", f"{report['arm_equals_python']} on {report['samples']} golden vectors "
                          f"({mism['arm_vs_python']} differ); python == tflm: {report['python_equals_tflm']}"),
        ("instructions", f"{ipi['mean']:,.0f} per inference (mean; min {ipi['min']:,}, max {ipi['max']:,}; "
                         "instructions, not cycles)"),
    ]
    if report.get("instructions_per_addition"):
        rows.append(("per addition", f"{report['instructions_per_addition']:.2f} instructions per executed addition "
                                     f"({report['additions_per_inference']:,.0f} additions, "
                                     f"{report['multiplications_per_inference']:,.0f} multiplications per inference)"))
    rows += [
        ("flash", f"runtime code {fl['runtime_code']:,} B + blob {fl['blob']:,} B = {fl['total']:,} B"),
        ("RAM", f"f4_model {ram['blob_state_f4_model']:,} B + scratch {ram['scratch']:,} B + stack peak "
                f"{ram['stack_peak_invoke']:,} B = {ram['total_invoke']:,} B"),
        ("f4_prepare", f"{report['prepare']['instructions']:,} instructions once (CRC and every check), stack "
                       f"{report['prepare']['stack_bytes']:,} B"),
    ]
    if "report" in report:
        rows.append(("report", report["report"]))
    rows.append(("ok", str(report["ok"])))
    return rows
