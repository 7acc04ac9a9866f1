/**
 * The Layer-1 compile gate (scripts/compile-gate.mjs, docs/gpu-verification.md). Its parsers of
 * ptxas and PTX output are checked on canned text everywhere; with nvcc present the gate itself runs
 * on the emulator's sample kernels: the tensor-core GEMM tile (native/simt/tests/gemm_tile.cu) passes
 * for sm_80 and sm_90 with no spills and mma.sync in its PTX, and the negative samples
 * (gate_negative.cu) fail for local memory, spills and a missing mma.sync. The PTX check
 * (--ptx-check test/compile-gate/ptx_wrappers.cu) passes for every inline-asm wrapper of
 * native/cuda/ptx.cuh on sm_80 and sm_90, and fails on a copy of ptx.cuh whose device strings were
 * mutated one at a time (a dropped .trans, .x4 -> .x2, another mma type, a cp.async without its
 * src-size, a new wrapper without a kernel). The mask policies (attnkit/mask_*.h) compile as device
 * code for sm_80 and sm_90 at 64 x 64 and 128 x 64 tiles without local memory
 * (test/compile-gate/policies.cu), and a host function in their device path or a per-thread array
 * fails the gate. Skipped visibly without nvcc. Without nvcc too: the policies' host check
 * (test/compile-gate/policies_host.cc) under AddressSanitizer and UBSan at 64 x 64, 128 x 64 and
 * 64 x 32.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const script = join(root, 'scripts', 'compile-gate.mjs');
const SAMPLE = 'native/simt/tests/gemm_tile.cu';
const NEGATIVE = 'native/simt/tests/gate_negative.cu';
const PTX_CHECK = 'test/compile-gate/ptx_wrappers.cu';
const PTX_HEADER = join(root, 'native', 'cuda', 'ptx.cuh');
const POLICIES = 'test/compile-gate/policies.cu';
const POLICIES_HOST = join(root, 'test', 'compile-gate', 'policies_host.cc');
const INCLUDE = join(root, 'native', 'include');
const gxx = spawnSync('g++', ['--version'], { encoding: 'utf8' }).status === 0;

interface KernelRow {
  kernel: string;
  arch: string;
  entry: boolean;
  registers: number;
  smem: number;
  dynamicSmem: number;
  spillStores: number;
  spillLoads: number;
  stackFrame: number;
  mma: number;
  ldmatrix: number;
  cpAsync: number;
  tensorCore: boolean;
  violations: string[];
}
interface PtxRow {
  wrapper: string;
  arch: string;
  device: string[];
  emulator: string[];
  ok: boolean;
}
interface Report {
  ok: boolean;
  archs: string[];
  kernels: KernelRow[];
  ptx: PtxRow[];
  violations: string[];
}
interface GateModule {
  findNvcc(explicit?: string): string | null;
  parsePtxasOutput(text: string): {
    mangled: string;
    entry: boolean;
    registers: number | null;
    barriers: number | null;
    smem: number;
    stackFrame: number;
    spillStores: number;
    spillLoads: number;
    warnings: string[];
  }[];
  ptxFunctions(ptx: string): Map<string, { entry: boolean; mma: number; totals: { mma: number; ldmatrix: number; cpAsync: number } }>;
  canonicalInstruction(text: string): string;
  inlineAsm(body: string): string[];
  asmWrappers(header: string): string[];
  parseEmulatorListing(text: string): Map<string, string[]>;
}

const gateModule = (await import(pathToFileURL(script).href)) as GateModule;
const nvcc = gateModule.findNvcc();

function gate(args: string[]): { status: number | null; stdout: string; stderr: string; report: Report | null } {
  const dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-test-'));
  const out = join(dir, 'report.json');
  try {
    const r = spawnSync(process.execPath, [script, '--out', out, ...args], { cwd: root, encoding: 'utf8', timeout: 300_000 });
    let report: Report | null = null;
    try {
      report = JSON.parse(readFileSync(out, 'utf8')) as Report;
    } catch {
      report = null;
    }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, report };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The PTX check against a (mutated) copy of ptx.cuh. */
function gateWithHeader(header: string, args: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-ptx-'));
  try {
    mkdirSync(join(dir, 'cuda'));
    writeFileSync(join(dir, 'cuda', 'ptx.cuh'), header);
    symlinkSync(join(root, 'native', 'cuda', 'cuda_compat.cuh'), join(dir, 'cuda', 'cuda_compat.cuh'));
    symlinkSync(join(root, 'native', 'simt'), join(dir, 'simt'));
    return gate(['--ptx-check', PTX_CHECK, '--ptx-header', join(dir, 'cuda', 'ptx.cuh'), ...args]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('compile gate: parsers', () => {
  it('reads registers, barriers, smem, stack frames, spills and warnings from ptxas -v', () => {
    const text = [
      "ptxas warning : Local memory used for function '_Z1bv', size of stack frame: 64 bytes",
      "ptxas warning : Registers are spilled to local memory in function '_Z1bv', 8 bytes spill stores, 4 bytes spill loads",
      'ptxas info    : 0 bytes gmem',
      "ptxas info    : Compiling entry function '_Z1av' for 'sm_80'",
      'ptxas info    : Function properties for _Z1av',
      '    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads',
      'ptxas info    : Used 72 registers, used 1 barriers, 20480 bytes smem, 388 bytes cmem[0]',
      "ptxas info    : Compiling entry function '_Z1bv' for 'sm_80'",
      'ptxas info    : Function properties for _Z1bv',
      '    64 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads',
      'ptxas info    : Used 32 registers, used 0 barriers, 64 bytes cumulative stack size, 360 bytes cmem[0]',
      'ptxas info    : Function properties for _Z6helperf',
      '    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads',
    ].join('\n');
    const fns = gateModule.parsePtxasOutput(text);
    const a = fns.find((f) => f.mangled === '_Z1av')!;
    const b = fns.find((f) => f.mangled === '_Z1bv')!;
    const h = fns.find((f) => f.mangled === '_Z6helperf')!;
    expect(a).toMatchObject({ entry: true, registers: 72, barriers: 1, smem: 20480, stackFrame: 0, spillStores: 0 });
    expect(b).toMatchObject({ entry: true, registers: 32, smem: 0, stackFrame: 64, spillStores: 8, spillLoads: 4 });
    expect(b.warnings).toHaveLength(2);
    expect(h).toMatchObject({ entry: false, stackFrame: 16 });
  });

  it('counts mma.sync, ldmatrix and cp.async per PTX entry, through called functions', () => {
    const ptx = [
      '.func  (.param .b32 func_retval0) _Z4leafv(',
      ')',
      '{',
      '\tmma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f5, %f6, %f7, %f8};',
      '}',
      '.visible .entry _Z3tcav(',
      '\t.param .u64 _Z3tcav_param_0',
      ')',
      '.maxntid 128, 1, 1',
      '{',
      '\tldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r1, %r2, %r3, %r4}, [%r5];',
      '\tcp.async.cg.shared.global [%r6], [%rd1], 16;',
      '\t{ // callseq 0, 0',
      '\tcall.uni (retval0), ',
      '\t_Z4leafv,',
      '\t();',
      '\t}',
      '}',
      '.visible .entry _Z5plainv()',
      '{',
      '\tret;',
      '}',
    ].join('\n');
    const fns = gateModule.ptxFunctions(ptx);
    expect(fns.get('_Z3tcav')!.totals).toEqual({ mma: 1, ldmatrix: 1, cpAsync: 1 });
    expect(fns.get('_Z3tcav')!.mma).toBe(0);
    expect(fns.get('_Z5plainv')!.totals.mma).toBe(0);
    expect(fns.get('_Z4leafv')!.entry).toBe(false);
  });

  it('reads inline asm from PTX bodies and the emulator listing into one canonical form', () => {
    const body = [
      '{',
      '\t// begin inline asm',
      '\tldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r1, %r2, %r3,  %r4}, [%r5];',
      '',
      '\t// end inline asm',
      '\tst.global.u32 \t[%rd3], %r1;',
      '\t// begin inline asm',
      '\tcp.async.cg.shared.global [%r6], [%rd1], 16, %r7;',
      '\t// end inline asm',
      '\t// begin inline asm',
      '\tcp.async.wait_all;',
      '\t// end inline asm',
      '}',
    ].join('\n');
    expect(gateModule.inlineAsm(body)).toEqual([
      'ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%, %, %, %}, [%]',
      'cp.async.cg.shared.global [%], [%], 16, %',
      'cp.async.commit_group', // wait_all is commit_group + wait_group 0 (PTX ISA)
      'cp.async.wait_group 0',
    ]);
    const listing = gateModule.parseEmulatorListing('== ptx_a\nldmatrix.sync.aligned.m8n8.x1.shared.b16 {%}, [%]\n== ptx_b\n');
    expect([...listing]).toEqual([['ptx_a', ['ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%}, [%]']], ['ptx_b', []]]);
    // every wrapper of ptx.cuh with inline asm, and nothing else (pack_*, pack2, the mma_m16n8k16<T> switch)
    expect(gateModule.asmWrappers(readFileSync(PTX_HEADER, 'utf8')).sort()).toEqual([
      'cp_async_16', 'cp_async_16_zfill', 'cp_async_commit', 'cp_async_wait', 'cp_async_wait_all',
      'ldmatrix_x1', 'ldmatrix_x1_trans', 'ldmatrix_x2', 'ldmatrix_x2_trans', 'ldmatrix_x4', 'ldmatrix_x4_trans',
      'mma_m16n8k16_bf16', 'mma_m16n8k16_f16',
    ]);
  });

  it('rejects bad arguments with exit status 2', () => {
    const r = spawnSync(process.execPath, [script, '--arch', 'sm_eighty', SAMPLE], { cwd: root, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("bad --arch value 'eighty'");
  });
});

describe.skipIf(nvcc === null)(`compile gate with nvcc${nvcc === null ? ' (skipped: nvcc not found)' : ''}`, () => {
  it('passes the sample GEMM tile for sm_80 and sm_90: no spills, no local memory, mma.sync in the PTX', () => {
    const r = gate(['--arch', '80,90', '--tensor-core', 'gemm_tile', '--dynamic-smem', '19456', '--max-smem', '49152',
      '--max-registers', '128', SAMPLE]);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const report = r.report!;
    expect(report.ok).toBe(true);
    expect(report.archs).toEqual(['sm_80', 'sm_90']);
    const rows = report.kernels.filter((k) => k.entry);
    expect(rows).toHaveLength(4);  // f16 and bf16, two archs
    for (const k of rows) {
      expect(k.kernel).toMatch(/gemm_tile<(__half|__nv_bfloat16)>/);
      expect(k).toMatchObject({ spillStores: 0, spillLoads: 0, stackFrame: 0, tensorCore: true, dynamicSmem: 19456 });
      expect(k.registers).toBeGreaterThan(0);
      expect(k.registers).toBeLessThanOrEqual(128);
      expect(k.mma).toBeGreaterThan(0);
      expect(k.ldmatrix).toBeGreaterThan(0);
      expect(k.cpAsync).toBeGreaterThan(0);
    }
    console.log(
      'compile gate, sample kernels:\n' +
        rows.map((k) => `  ${k.arch} ${k.kernel.replace(/\(.*$/, '')}: ${k.registers} registers, ${k.smem} B static + ` +
          `${k.dynamicSmem} B dynamic smem, spills ${k.spillStores}/${k.spillLoads}, stack ${k.stackFrame}, mma ${k.mma}`).join('\n'),
    );
  });

  it('compiles the sample with its host launcher (ATTNKIT_LAUNCH is <<<>>> under nvcc)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-host-'));
    try {
      const r = spawnSync(nvcc!, ['-c', '-std=c++17', '-arch=sm_80', join(root, SAMPLE), '-o', join(dir, 'gemm_tile.o')], {
        cwd: root,
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails on local memory, on spills and on a tensor-core kernel without mma.sync (both archs)', () => {
    const r = gate(['--tensor-core', 'gate_no_tensor_cores', NEGATIVE]);
    expect(r.status).toBe(1);
    const v = r.report!.violations.join('\n');
    for (const arch of ['sm_80', 'sm_90']) {
      expect(v).toMatch(new RegExp(`${arch} gate_local_memory.*uses local memory \\(4096-byte stack frame\\)`));
      expect(v).toMatch(new RegExp(`${arch} gate_spills.*spills registers`));
      expect(v).toMatch(new RegExp(`${arch} gate_no_tensor_cores.*no mma\\.sync`));
    }
    expect(r.stderr).toContain('compile gate FAILED');
  });

  it('PTX check: every inline-asm wrapper of ptx.cuh emits the instruction the emulator models (sm_80, sm_90)', () => {
    const r = gate(['--ptx-check', PTX_CHECK]);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const rows = r.report!.ptx;
    expect(rows).toHaveLength(13 * 2);
    expect(rows.filter((x) => !x.ok)).toEqual([]);
    const x4t = rows.find((x) => x.wrapper === 'ldmatrix_x4_trans' && x.arch === 'sm_90')!;
    expect(x4t.device).toEqual(['ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%, %, %, %}, [%]']);
    expect(rows.find((x) => x.wrapper === 'cp_async_wait_all')!.emulator).toEqual(['cp.async.commit_group', 'cp.async.wait_group 0']);
  });

  // Each mutation changes one device string of a copy of ptx.cuh (the emulator branch stays): the
  // PTX check must name the wrapper. The copy sits in <tmp>/cuda next to links to cuda_compat.cuh and
  // native/simt, so that its includes resolve as in the tree.
  const mutations: [string, string, string, string][] = [
    ['a dropped .trans', 'ldmatrix_x4_trans', 'm8n8.x4.trans.shared.b16', 'm8n8.x4.shared.b16'],
    ['.x4 written .x2', 'ldmatrix_x4', 'm8n8.x4.shared.b16 {%0, %1, %2, %3}', 'm8n8.x2.shared.b16 {%0, %1, %2, %3}'],
    ['bf16 written f16', 'mma_m16n8k16_bf16', 'row.col.f32.bf16.bf16.f32', 'row.col.f32.f16.f16.f32'],
    ['zfill without its src-size', 'cp_async_16_zfill', '[%1], 16, %2;\\n" ::"r"(smem_u32(smem_dst)),', '[%1], 16;\\n" ::"r"(smem_u32(smem_dst)),'],
  ];
  it.each(mutations)('PTX check fails on %s (%s)', (_what, wrapper, from, to) => {
    const text = readFileSync(PTX_HEADER, 'utf8');
    const at = text.indexOf(`ATTNKIT_DEVICE void ${wrapper}(`);
    expect(at).toBeGreaterThan(0);
    const i = text.indexOf(from, at);
    expect(i, `'${from}' not found after ${wrapper}`).toBeGreaterThan(at);
    const mutated = text.slice(0, i) + to + text.slice(i + from.length);
    const r = gateWithHeader(mutated, ['--arch', '80']);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(1);
    const bad = r.report!.ptx.filter((x) => !x.ok).map((x) => x.wrapper);
    expect(bad).toEqual([wrapper]);
    expect(r.report!.violations.join('\n')).toMatch(new RegExp(`ptx\\.cuh ${wrapper} \\(sm_80\\): the device PTX is`));
  });

  it('PTX check fails on an inline-asm wrapper without its kernel', () => {
    const text = readFileSync(PTX_HEADER, 'utf8');
    const extra = `ATTNKIT_DEVICE void cp_async_fence_extra(ATTNKIT_SITE_PARAM0) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\\n" ::: "memory");
#endif
}
}  // namespace attnkit::ptx`;
    const r = gateWithHeader(text.replace('}  // namespace attnkit::ptx', extra), ['--arch', '80']);
    expect(r.status).toBe(1);
    expect(r.report!.violations.join('\n')).toContain('cp_async_fence_extra (sm_80): no kernel ptx_cp_async_fence_extra');
  });

  it('the mask policies compile as device code for sm_80 and sm_90 (64x64 and 128x64), without local memory', () => {
    const r = gate(['-I', INCLUDE, POLICIES]);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const rows = r.report!.kernels.filter((k) => k.entry);
    expect(rows).toHaveLength(10 * 2);
    for (const shape of ['dense_policy<64, 64>', 'dense_policy<128, 64>', 'block_sparse_policy<128, 64>', 'neighborhood_policy<3, 128, 64>'])
      expect(rows.filter((k) => k.kernel.includes(shape)).map((k) => k.arch).sort()).toEqual(['sm_80', 'sm_90']);
    for (const k of rows) expect(k).toMatchObject({ stackFrame: 0, spillStores: 0, spillLoads: 0 });
    console.log(`compile gate, policies: ${rows.map((k) => `${k.arch} ${k.kernel.replace(/^void \(anonymous namespace\)::/, '').replace(/\(.*$/, '')} ${k.registers} regs`).join('; ')}`);
  });

  // The two ways the policy headers failed as device code, injected into a copy of native/include.
  const policyMutations: [string, string, string, string, RegExp][] = [
    ['a host builtin in the device path', 'mask_neighborhood.h', 'low_k += ctz64(uint64_t(x.tk));', 'low_k += __builtin_ctzll(uint64_t(x.tk));',
      /calling a __host__ function\("__builtin_ctzll"\)/],
    ['a per-thread array', 'mask_block_sparse.h', '    uint64_t mask = 0;\n    for (int64_t b = k0 / m->bk;', '    uint64_t rows[QTile] = {};\n    rows[q % QTile] = 1;\n    uint64_t mask = rows[(q + 1) % QTile];\n    for (int64_t b = k0 / m->bk;',
      /block_sparse_policy<64, 64>.*uses local memory/],
  ];
  it.each(policyMutations)('the policy gate fails on %s (%s)', (_what, file, from, to, expected) => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-policies-'));
    try {
      cpSync(INCLUDE, join(dir, 'include'), { recursive: true });
      const path = join(dir, 'include', 'attnkit', file);
      const text = readFileSync(path, 'utf8');
      expect(text.includes(from), `'${from}' not in ${file}`).toBe(true);
      writeFileSync(path, text.replace(from, to));
      const r = gate(['--arch', '80', '-I', join(dir, 'include'), POLICIES]);
      expect(r.status).toBe(1);
      expect(r.report!.violations.join('\n')).toMatch(expected);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes a manifest; fails on a register budget and on a tensor-core pattern that matches nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-manifest-'));
    try {
      const manifest = join(dir, 'kernels.json');
      writeFileSync(manifest, JSON.stringify({
        entries: [{ file: join(root, SAMPLE), tensorCore: ['gemm_tile', 'no_such_kernel'], maxRegisters: 32 }],
      }));
      const r = gate(['--arch', '80', '--manifest', manifest]);
      expect(r.status).toBe(1);
      const v = r.report!.violations.join('\n');
      expect(v).toMatch(/registers \(budget 32\)/);
      expect(v).toContain('no kernel matches the tensor-core pattern /no_such_kernel/');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!gxx)(`mask policies on the host under ASan and UBSan${gxx ? '' : ' (skipped: g++ not found)'}`, () => {
  it('agree with allows() at 64x64, 128x64 and 64x32 tiles: tokens, row masks, exact classes, tight tile lists', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-policies-host-'));
    try {
      const exe = join(dir, 'policies_host');
      const c = spawnSync('g++', ['-std=c++17', '-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all',
        '-fno-omit-frame-pointer', '-Wall', '-Wextra', '-Werror', `-I${INCLUDE}`, POLICIES_HOST, '-o', exe], { encoding: 'utf8', timeout: 300_000 });
      expect(c.status, c.stderr).toBe(0);
      const r = spawnSync(exe, [], { encoding: 'utf8', timeout: 300_000 });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      for (const line of ['dense 64x64', 'dense 128x64', 'dense 64x32', 'block-sparse 64x64', 'block-sparse 128x64',
        'block-sparse 64x32', 'neighborhood 64x64', 'neighborhood 128x64', 'neighborhood 64x32'])
        expect(r.stdout).toContain(`${line}: `);
      expect(r.stderr).toBe('');
      console.log(r.stdout.trim().split('\n').pop());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
