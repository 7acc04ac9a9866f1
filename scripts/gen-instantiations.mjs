#!/usr/bin/env node
/**
 * Generates everything that depends on which CUDA kernels are compiled from the one list (STYLE
 * point 4), native/cuda/instantiations.json (format: docs/cuda-kernels.md). The list names every
 * kernel family, the ops of the backend table (native/ops/ops.cc) each family serves, and the
 * family's instantiations. Outputs:
 *   per family with instantiations, in <dir>/generated/ (written by the family's emitter, below):
 *     one tiny translation unit per kernel (a named launcher whose template instantiates the kernel,
 *     and a static_assert that the kernel's shared memory is what the gate manifest says),
 *     dispatch.h      the dispatch table per policy (included by <dir>/dispatch.h)
 *     sources.cmake   ATTNKIT_<FAMILY>_CUDA_SOURCES
 *     gate.json       the compile-gate manifest (scripts/compile-gate.mjs --manifest): every kernel,
 *                     tensor-core tripwire, dynamic shared memory, budgets
 *   for every family, in native/cuda/generated/:
 *     supports.h      the support table per op (dtype, head dims, policy of each compiled kernel),
 *                     read by cuda::support (device_attention.cu) and the CUDA column of ops.cc
 *     kernels.json    the same rows with their kernels, for `attnkit info` (src/info.ts)
 *     sources.cmake   ATTNKIT_GENERATED_CUDA_SOURCES: every family's sources, for CMakeLists.txt
 * The outputs are committed. `--check` regenerates in memory and exits 1 when a committed file
 * differs, is missing or is stale (test/instantiations.test.ts runs it), so the list and the build
 * cannot drift.
 *
 * Usage: node scripts/gen-instantiations.mjs [--check]
 * Exit status: 0 written / up to date, 1 out of date (--check), 2 invalid list.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIST_PATH = 'native/cuda/instantiations.json';
const LIST = join(root, LIST_PATH);
const OPS_TABLE = join(root, 'native/ops/ops.cc');
const COMMON_DIR = 'native/cuda/generated';

// The list's dtype names; each emitter says which of them its kernels take.
const DTYPES = {
  f32: { cpp: 'float', dtype: 'DType::Float32', name: 'float32' },
  f16: { cpp: '__half', dtype: 'DType::Float16', name: 'float16' },
  bf16: { cpp: '__nv_bfloat16', dtype: 'DType::BFloat16', name: 'bfloat16' },
};
const TILE_KEYS = ['bm', 'bn', 'warps'];

/** The op names of the backend table (native/ops/ops.cc): `const Op<Args> kName{"op", ...}`. */
export function backendOps(path = OPS_TABLE) {
  return new Set([...readFileSync(path, 'utf8').matchAll(/^const Op<.*?> k\w+\{"(\w+)"/gm)].map((m) => m[1]));
}

// ------------------------------------------------------------------ the fmha family

// Shared memory per kernel, mirroring native/cuda/fmha/kernel_traits.h (each generated translation
// unit static_asserts the two agree): [rows][D] tiles of 2-byte elements, no padding (swizzled);
// query tiles have bm rows, key tiles bn.
const tileBytes = (rows, d) => rows * d * 2;
const FMHA_SMEM = {
  fwd: (d, t) => tileBytes(t.bm, d) + 4 * tileBytes(t.bn, d),  // Q, 2 stages of (K, V)
  dkdv: (d, t) => 2 * tileBytes(t.bn, d) + 4 * tileBytes(t.bm, d) + 2 * t.bm * (4 + 4 + 8),  // K, V, 2 x (Q, dO, LSE, delta, masks)
  dq: (d, t) => 2 * tileBytes(t.bm, d) + 4 * tileBytes(t.bn, d),  // Q, dO, 2 stages of (K, V)
  prep: () => 0,
};
const FMHA_TRAIT = { fwd: 'kFwdSmem', dkdv: 'kDkdvSmem', dq: 'kDqSmem' };
// The most any of the release architectures gives a block (sm_86/sm_89: 99 KiB; sm_80 163 KiB, sm_90
// 227 KiB): a kernel above it would fail to launch on part of the release targets.
const MAX_SMEM = 101376;
const MAX_REGISTERS = 255;
// The mask policies' tile (kTile, attnkit/mask.h): the kernels use the policies' tile lists and row
// masks unchanged, so both tiles must equal it until the policies take the tile shape as a parameter.
const POLICY_TILE = 64;

const fmha = {
  keys: ['direction', 'dtype', 'headDim', 'policy'],  // what an entry gives (plus an optional tile)
  tiled: true,
  directions: ['fwd', 'bwd'],
  dtypes: ['f16', 'bf16'],  // what mma.sync m16n8k16 takes with float32 accumulation
  policies: { dense: { mask: 'DenseMask', header: 'attnkit/mask_dense.h' } },
  // Power-of-two head dims from 32 to 128: the shared-memory swizzle (kernel_traits.h, swz) XORs the
  // chunk index within a power-of-two row, and at 128 the dK/dV accumulators already take 128 of the
  // 255 registers per thread.
  headDim: { ok: (d) => Number.isInteger(d) && d >= 32 && d <= 128 && (d & (d - 1)) === 0, text: 'a power of two from 32 to 128' },
  tile(t) {
    if (t.bm !== POLICY_TILE || t.bn !== POLICY_TILE)
      return `bm and bn must equal the mask policies' tile ${POLICY_TILE} (attnkit/mask.h), received bm ${t.bm}, bn ${t.bn}`;
    if (t.warps * 16 !== t.bm) return `warps must be bm / 16 (16 rows per warp), received ${t.warps} for bm ${t.bm}`;
    return '';
  },
  kernels(e) {
    return e.direction === 'fwd' ? ['fwd'] : ['prep', 'dkdv', 'dq'];
  },
  smem: (kind, e) => FMHA_SMEM[kind](e.headDim, e.tile),
  emit: emitFmha,
};

// ------------------------------------------------------------------ the merge family

// Memory-bound, one warp per row (native/cuda/merge/merge.cuh): an entry is a direction and an
// element type; every value head dim up to the binding's 1024 and 1 to kMaxParts parts run on the
// same kernel, so the support rows say head dim 0 ("any").
const merge = {
  keys: ['direction', 'dtype'],
  tiled: false,
  directions: ['fwd', 'bwd'],
  dtypes: ['f32', 'f16', 'bf16'],
  kernels: () => ['merge'],
  emit: emitMerge,
};

const mergeFn = (e) => `merge_${e.direction}_${e.dtype}`;

/** The merge family's generated folder: one unit per (direction, dtype), the table, the manifest. */
function emitMerge(family) {
  const list = family.instantiations;
  const files = new Map();
  const gen = `${family.dir}/generated`;
  const elem = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
  for (const e of list) {
    const args = e.direction === 'fwd' ? 'FwdArgs' : 'BwdArgs';
    files.set(`${mergeFn(e)}.cu`, `${header(`attention merge ${e.direction === 'fwd' ? 'forward' : 'backward'}, ${e.dtype}`)}#include "../merge.cuh"

namespace attnkit::cuda::merge {

void ${mergeFn(e)}(const ${args}& a, cudaStream_t stream) { launch_${e.direction}<${elem[e.dtype]}>(a, stream); }

}  // namespace attnkit::cuda::merge
`);
  }
  // One table row per dtype with both directions (a dtype listed in one direction only gets a null
  // launcher in the other, which dispatch.h refuses).
  const dtypes = [...new Set(list.map((e) => e.dtype))];
  const has = (direction, dtype) => list.some((e) => e.direction === direction && e.dtype === dtype);
  let h = `${header('the dispatch table')}// Included by ../dispatch.h, which defines Entry and Table.
#pragma once

namespace attnkit::cuda::merge {

${list.map((e) => `void ${mergeFn(e)}(const ${e.direction === 'fwd' ? 'FwdArgs' : 'BwdArgs'}&, cudaStream_t);`).join('\n')}

struct Table {
  static constexpr int count = ${dtypes.length};
  static constexpr Entry entries[] = {
${dtypes.map((d) => `      {${DTYPES[d].dtype}, "merge ${d}", ${has('fwd', d) ? `&${mergeFn({ direction: 'fwd', dtype: d })}` : 'nullptr'}, ` +
    `${has('bwd', d) ? `&${mergeFn({ direction: 'bwd', dtype: d })}` : 'nullptr'}},`).join('\n')}
  };
};

}  // namespace attnkit::cuda::merge
`;
  files.set('dispatch.h', h);
  const gate = {
    $comment: `Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit. ` +
      `Run: node scripts/compile-gate.mjs --manifest ${gen}/gate.json`,
    entries: list.map((e) => ({
      file: `${mergeFn(e)}.cu`,
      includes: ['../../../include'],
      dynamicSmem: 0,
      maxSmem: MAX_SMEM,
      maxRegisters: MAX_REGISTERS,
    })),
  };
  files.set('gate.json', JSON.stringify(gate, null, 2) + '\n');
  return { files, units: list.map((e) => ({ path: `${gen}/${mergeFn(e)}.cu`, dynamicSmem: 0, serves: [kernelName(e)] })) };
}

// ------------------------------------------------------------------ the selection family

// MoBA gating and XAttention scoring (native/cuda/selection/selection.cuh): an entry is an op (its
// direction) and an element type. Each kernel is its own unit: per dtype those that read q and k
// (MoBA pool and gate, XAttention score), once per listed op those that do not (the selections and
// the mask lists), once the offsets scan. Head dims, block sizes, strides and top-k are run-time
// values (support rows: head dim 0, "any").
const selection = {
  keys: ['direction', 'dtype'],
  tiled: false,
  directions: ['moba', 'xattention'],
  dtypes: ['f32', 'f16', 'bf16'],
  kernels: () => ['selection'],
  emit: emitSelection,
};

const SELECTION_KERNELS = {
  moba: { typed: ['pool', 'gate'], shared: ['mask'], args: [['const MobaParams&', 'p'], ['float*', 'kbar']],
    sharedArgs: [['const MobaParams&', 'p'], ['bool', 'write']] },
  xattention: { typed: ['score'], shared: ['select', 'mask'], args: [['const XattnParams&', 'p']],
    sharedArgs: { select: [['const XattnParams&', 'p']], mask: [['const XattnParams&', 'p'], ['bool', 'write']] } },
};
const SCAN_ARGS = [['const MaskOutput&', 'm'], ['int64_t', 'rows']];

/** The selection family's generated folder: one unit per kernel, the table of the typed launchers, the manifest. */
function emitSelection(family) {
  const list = family.instantiations;
  const files = new Map();
  const gen = `${family.dir}/generated`;
  const elem = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
  const decl = (args) => args.map(([t]) => t).join(', ');
  const units = [];  // {name, args, call, serves}
  for (const e of list)
    for (const kind of SELECTION_KERNELS[e.direction].typed)
      units.push({ name: `selection_${e.direction}_${kind}_${e.dtype}`, args: SELECTION_KERNELS[e.direction].args,
        call: `launch_${e.direction}_${kind}<${elem[e.dtype]}>`, serves: [kernelName(e)],
        what: `${e.direction === 'moba' ? 'MoBA' : 'XAttention'} ${kind}, ${e.dtype}` });
  for (const d of Object.keys(SELECTION_KERNELS))  // every op's, so that dispatch.h always links
    for (const kind of SELECTION_KERNELS[d].shared) {
      const a = SELECTION_KERNELS[d].sharedArgs;
      units.push({ name: `selection_${d}_${kind}`, args: Array.isArray(a) ? a : a[kind], call: `launch_${d}_${kind}`,
        serves: list.filter((e) => e.direction === d).map(kernelName), what: `${d === 'moba' ? 'MoBA' : 'XAttention'} ${kind}, every dtype` });
    }
  units.push({ name: 'selection_offsets_scan', args: SCAN_ARGS, call: 'launch_offsets_scan', serves: list.map(kernelName),
    what: 'the mask offsets scan, every dtype' });
  for (const u of units)
    files.set(`${u.name}.cu`, `${header(u.what)}#include "../selection.cuh"

namespace attnkit::cuda::selection {

void ${u.name}(${u.args.map(([t, n]) => `${t} ${n}`).join(', ')}, cudaStream_t stream) { ${u.call}(${u.args.map(([, n]) => n).join(', ')}, stream); }

}  // namespace attnkit::cuda::selection
`);
  const dtypes = [...new Set(list.map((e) => e.dtype))];
  const fn = (dir, kind, d) => (list.some((e) => e.direction === dir && e.dtype === d) ? `&selection_${dir}_${kind}_${d}` : 'nullptr');
  files.set('dispatch.h', `${header('the dispatch table')}// Included by ../dispatch.h, which defines Entry and Table.
#pragma once

namespace attnkit::cuda::selection {

${units.map((u) => `void ${u.name}(${decl(u.args)}, cudaStream_t);`).join('\n')}

struct Table {
  static constexpr int count = ${dtypes.length};
  static constexpr Entry entries[] = {
${dtypes.map((d) => `      {${DTYPES[d].dtype}, "selection ${d}", ${fn('moba', 'pool', d)}, ${fn('moba', 'gate', d)}, ${fn('xattention', 'score', d)}},`).join('\n')}
  };
};

}  // namespace attnkit::cuda::selection
`);
  const gate = {
    $comment: `Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit. ` +
      `Run: node scripts/compile-gate.mjs --manifest ${gen}/gate.json`,
    entries: units.map((u) => ({ file: `${u.name}.cu`, includes: ['../../../include'], dynamicSmem: 0, maxSmem: MAX_SMEM, maxRegisters: MAX_REGISTERS })),
  };
  files.set('gate.json', JSON.stringify(gate, null, 2) + '\n');
  return { files, units: units.map((u) => ({ path: `${gen}/${u.name}.cu`, dynamicSmem: 0, serves: u.serves })) };
}

// ------------------------------------------------------------------ the blockSparse family

// The fmha forward and backward kernels with the block-sparse policy at the fmha tile (64 x 64;
// native/cuda/block_sparse/README.md): an entry is a direction, dtype and head dim like fmha's, with
// policy "blockSparse"; every block geometry of a BlockMask (powers of two 16..128 per axis) runs on
// the same kernels through the mask's plan, built on the device by the family's one plan kernel.
const blockSparse = {
  ...fmha,
  policies: { blockSparse: { mask: 'BlockSparseDeviceMask', header: '../policy.h' } },
  emit: emitBlockSparse,
};
const BS_PLAN_UNIT = 'bs_plan.cu';
// Dynamic shared memory of the plan kernel's scan steps: one int64 sum per thread (plan.cuh).
const BS_PLAN_SMEM = 128 * 8;
const bsFn = (kind, e) => `${kind}_${e.dtype}_d${e.headDim}`;

function bsUnit(kind, e) {
  const t = DTYPES[e.dtype].cpp;
  const d = e.headDim;
  const what = { fwd: 'forward', prep: 'backward pre-pass', dkdv: 'backward dK/dV', dq: 'backward dQ' }[kind];
  const args = kind === 'fwd' ? 'fmha::FwdArgs' : 'fmha::BwdArgs';
  const head = `${header(`block-sparse ${what}, ${e.dtype}, D = ${d}, ${e.tile.bm} x ${e.tile.bn} tiles, ${e.tile.warps} warps`)}` +
    `#include "../../fmha/${kind === 'fwd' ? 'fwd' : 'bwd'}.cuh"\n#include "../policy.h"\n\nnamespace attnkit::cuda::block_sparse {\n\n`;
  if (kind === 'prep')
    return `${head}void ${bsFn(kind, e)}(const ${args}& a, cudaStream_t stream) { fmha::launch_bwd_prep<${t}, ${d}>(a, stream); }\n\n}  // namespace attnkit::cuda::block_sparse\n`;
  const launcher = { fwd: 'launch_fwd', dkdv: 'launch_bwd_dkdv', dq: 'launch_bwd_dq' }[kind];
  return `${head}using Tr = fmha::${traits(e)};
static_assert(Tr::${FMHA_TRAIT[kind]} == ${fmha.smem(kind, e)},
              "shared memory differs from generated/gate.json: update scripts/gen-instantiations.mjs");

void ${bsFn(kind, e)}(const ${args}& a, const BlockSparseDeviceMask& mask, cudaStream_t stream) {
  fmha::${launcher}<Tr>(a, mask, stream);
}

}  // namespace attnkit::cuda::block_sparse
`;
}

/** The blockSparse family's generated folder: the kernels per entry, the plan kernel, the table. */
function emitBlockSparse(family) {
  const list = family.instantiations;
  const files = new Map();
  const units = [];
  for (const e of list)
    for (const kind of fmha.kernels(e)) {
      const file = `bs_${bsFn(kind, e)}.cu`;
      files.set(file, bsUnit(kind, e));
      units.push({ kind, e, file, serves: [kernelName(e)], smem: fmha.smem(kind, e) });
    }
  files.set(BS_PLAN_UNIT, `${header('the plan kernel (every step of plan.cuh)')}#include "../plan.cuh"

namespace attnkit::cuda::block_sparse {

void build_plan(const PlanArgs& a, cudaStream_t stream) { launch_plan(a, stream); }

}  // namespace attnkit::cuda::block_sparse
`);
  units.push({ kind: 'plan', file: BS_PLAN_UNIT, serves: list.map(kernelName), smem: BS_PLAN_SMEM });
  const fwd = list.filter((e) => e.direction === 'fwd');
  const bwd = list.filter((e) => e.direction === 'bwd');
  const decl = units.map((u) => u.kind === 'plan' ? 'void build_plan(const PlanArgs&, cudaStream_t);' :
    `void ${bsFn(u.kind, u.e)}(const fmha::${u.kind === 'fwd' ? 'FwdArgs' : 'BwdArgs'}&${u.kind === 'prep' ? '' : ', const BlockSparseDeviceMask&'}, cudaStream_t);`);
  files.set('dispatch.h', `${header('the dispatch table')}// Included by ../dispatch.h, which defines FwdEntry, BwdEntry and Table.
#pragma once

namespace attnkit::cuda::block_sparse {

${decl.join('\n')}

struct Table {
  static constexpr int fwd_count = ${fwd.length};
  static constexpr FwdEntry fwd[] = {
${[...fwd.map((e) => `      {${DTYPES[e.dtype].dtype}, ${e.headDim}, "${kernelName(e)}", &${bsFn('fwd', e)}},`), '      {DType::Float32, 0, nullptr, nullptr},'].join('\n')}
  };
  static constexpr int bwd_count = ${bwd.length};
  static constexpr BwdEntry bwd[] = {
${[...bwd.map((e) => `      {${DTYPES[e.dtype].dtype}, ${e.headDim}, "${kernelName(e)}", &${bsFn('prep', e)}, &${bsFn('dkdv', e)}, &${bsFn('dq', e)}},`),
    '      {DType::Float32, 0, nullptr, nullptr, nullptr, nullptr},'].join('\n')}
  };
};

}  // namespace attnkit::cuda::block_sparse
`);
  const gen = `${family.dir}/generated`;
  files.set('gate.json', JSON.stringify({
    $comment: `Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit. ` +
      `Run: node scripts/compile-gate.mjs --manifest ${gen}/gate.json`,
    entries: units.map((u) => ({
      file: u.file,
      includes: ['../../../include'],
      ...(u.kind === 'prep' || u.kind === 'plan' ? {} : { tensorCore: true }),
      dynamicSmem: u.smem,
      maxSmem: MAX_SMEM,
      maxRegisters: MAX_REGISTERS,
    })),
  }, null, 2) + '\n');
  return { files, units: units.map((u) => ({ path: `${gen}/${u.file}`, dynamicSmem: u.smem, serves: u.serves })) };
}


const header = (what) =>
  `// Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}: ${what}.\n` +
  '// Do not edit; change the list and re-run the generator.\n';

const traits = (e) => `Traits<${DTYPES[e.dtype].cpp}, ${e.headDim}, ${e.tile.bm}, ${e.tile.bn}, ${e.tile.warps}>`;
const kernelName = (e) =>
  e.family === 'fmha' || e.family === 'neighborhood' ? `${e.family} ${e.direction} ${e.policy} ${e.dtype} d${e.headDim}` :
    `${e.family} ${e.direction} ${e.dtype}${e.headDim ? ` d${e.headDim}` : ''}`;
// The families built on the fused attention kernels (fmha/fwd.cuh, bwd.cuh), by the prefix of their
// launchers' and files' names and where their units find those headers (from <dir>/generated/).
const FUSED = {
  fmha: { prefix: '', file: 'fmha_', kernels: '..' },
  neighborhood: { prefix: 'na_', file: 'na_', kernels: '../../fmha' },
};
const fnName = (kind, e) => FUSED[e.family].prefix + (kind === 'prep' ? `bwd_prep_${e.dtype}_d${e.headDim}` :
  `${kind === 'fwd' ? 'fwd' : `bwd_${kind}`}_${e.policy}_${e.dtype}_d${e.headDim}`);
const fileName = (kind, e) => `${FUSED[e.family].file}${fnName(kind, e).slice(FUSED[e.family].prefix.length)}.cu`;

function fmhaUnit(kind, e) {
  const t = DTYPES[e.dtype].cpp;
  const d = e.headDim;
  const dir = FUSED[e.family].kernels;
  if (kind === 'prep') {
    return `${header(`backward pre-pass, ${e.dtype}, D = ${d}`)}#include "${dir}/bwd.cuh"

namespace attnkit::cuda::fmha {

void ${fnName(kind, e)}(const BwdArgs& a, cudaStream_t stream) { launch_bwd_prep<${t}, ${d}>(a, stream); }

}  // namespace attnkit::cuda::fmha
`;
  }
  const pol = EMITTERS[e.family].policies[e.policy];
  const file = `${dir}/${kind === 'fwd' ? 'fwd.cuh' : 'bwd.cuh'}`;
  const args = kind === 'fwd' ? 'FwdArgs' : 'BwdArgs';
  const launcher = { fwd: 'launch_fwd', dkdv: 'launch_bwd_dkdv', dq: 'launch_bwd_dq' }[kind];
  const what = { fwd: 'forward', dkdv: 'backward dK/dV', dq: 'backward dQ' }[kind];
  return `${header(`${what}, ${e.policy}, ${e.dtype}, D = ${d}, ${e.tile.bm} x ${e.tile.bn} tiles, ${e.tile.warps} warps`)}#include "${file}"
#include "${pol.header}"

namespace attnkit::cuda::fmha {

using Tr = ${traits(e)};
static_assert(Tr::${FMHA_TRAIT[kind]} == ${fmha.smem(kind, e)},
              "shared memory differs from generated/gate.json: update scripts/gen-instantiations.mjs");

void ${fnName(kind, e)}(const ${args}& a, const ${pol.mask}& mask, cudaStream_t stream) {
  ${launcher}<Tr>(a, mask, stream);
}

}  // namespace attnkit::cuda::fmha
`;
}

/**
 * The generated folder of a family of the fused attention kernels (fmha, neighborhood): name ->
 * content, and its units. `extra` is appended to the dispatch header (the neighborhood family's tile
 * shapes).
 */
function emitFmha(family, extra = '') {
  const emitter = EMITTERS[family.family];
  const list = family.instantiations;
  const files = new Map();
  const units = [];  // {kind, e, file, serves: the kernels (list entries) it is part of}
  const prepOf = new Map();  // the pre-pass is shared by every backward of a (dtype, head dim)
  for (const e of list) {
    for (const kind of emitter.kernels(e)) {
      const key = `${e.dtype}/${e.headDim}`;
      if (kind === 'prep' && prepOf.has(key)) {
        prepOf.get(key).serves.push(kernelName(e));
        continue;
      }
      const file = fileName(kind, e);
      files.set(file, fmhaUnit(kind, e));
      const u = { kind, e, file, serves: [kernelName(e)] };
      units.push(u);
      if (kind === 'prep') prepOf.set(key, u);
    }
  }

  // dispatch.h: declarations, then one Table specialisation per policy.
  let h = `${header('the dispatch table per mask policy')}// Included by ../dispatch.h, which defines FwdEntry, BwdEntry and Table.
#pragma once

namespace attnkit::cuda::fmha {

`;
  for (const u of units) {
    const mask = emitter.policies[u.e.policy].mask;
    h += u.kind === 'prep' ? `void ${fnName('prep', u.e)}(const BwdArgs&, cudaStream_t);\n` :
      `void ${fnName(u.kind, u.e)}(const ${u.kind === 'fwd' ? 'FwdArgs' : 'BwdArgs'}&, const ${mask}&, cudaStream_t);\n`;
  }
  for (const [policy, pol] of Object.entries(emitter.policies)) {
    const fwd = list.filter((e) => e.policy === policy && e.direction === 'fwd');
    const bwd = list.filter((e) => e.policy === policy && e.direction === 'bwd');
    if (fwd.length === 0 && bwd.length === 0) continue;
    const m = pol.mask;
    const fwdRows = fwd.map((e) => `      {${DTYPES[e.dtype].dtype}, ${e.headDim}, "${kernelName(e)}", &${fnName('fwd', e)}},`);
    const bwdRows = bwd.map((e) => `      {${DTYPES[e.dtype].dtype}, ${e.headDim}, "${kernelName(e)}", &${fnName('prep', e)}, ` +
      `&${fnName('dkdv', e)}, &${fnName('dq', e)}},`);
    // A sentinel row keeps the arrays non-empty; the counts exclude it.
    h += `
template <>
struct Table<${m}> {
  static constexpr int fwd_count = ${fwd.length};
  static constexpr FwdEntry<${m}> fwd[] = {
${[...fwdRows, `      {DType::Float32, 0, nullptr, nullptr},`].join('\n')}
  };
  static constexpr int bwd_count = ${bwd.length};
  static constexpr BwdEntry<${m}> bwd[] = {
${[...bwdRows, `      {DType::Float32, 0, nullptr, nullptr, nullptr, nullptr},`].join('\n')}
  };
};
`;
  }
  h += '\n}  // namespace attnkit::cuda::fmha\n' + extra;
  files.set('dispatch.h', h);

  const gen = `${family.dir}/generated`;
  const gate = {
    $comment: `Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit. ` +
      `Run: node scripts/compile-gate.mjs --manifest ${gen}/gate.json`,
    entries: units.map((u) => ({
      file: u.file,
      includes: ['../../../include'],
      ...(u.kind === 'prep' ? {} : { tensorCore: true }),
      dynamicSmem: emitter.smem(u.kind, u.e),
      maxSmem: MAX_SMEM,
      maxRegisters: MAX_REGISTERS,
    })),
  };
  files.set('gate.json', JSON.stringify(gate, null, 2) + '\n');
  return { files, units: units.map((u) => ({ path: `${gen}/${u.file}`, dynamicSmem: emitter.smem(u.kind, u.e), serves: u.serves })) };
}

// ------------------------------------------------------------------ the neighborhood family

// The fused attention kernels of fmha/ with the neighborhood policy NeighborhoodMask<R> (policies
// na1, na2, na3: R = 1, 2, 3; attnkit/mask_neighborhood.h), which gathers each dilation group's
// tokens box by box into the kernels' 64-position tiles. The per-axis tile shape (tokens per axis,
// product 64) is a field of the policy, not of the kernel: one kernel per (direction, rank, dtype,
// head dim) runs every shape of the family's `tileShapes`, the shapes the dispatch accepts.
const NA_RANK = { na1: 1, na2: 2, na3: 3 };
const neighborhood = {
  ...fmha,
  policies: Object.fromEntries(Object.entries(NA_RANK).map(([p, r]) => [p, { mask: `NeighborhoodMask<${r}>`, header: 'attnkit/mask_neighborhood.h' }])),
  familyKeys: ['tileShapes'],
  // tileShapes: {na1: [[64]], na2: [[8, 8], ...], ...}: per policy, boxes of powers of two holding 64 tokens.
  readFamily(f, at) {
    const t = f.tileShapes;
    if (!t || typeof t !== 'object' || Array.isArray(t)) fail(at, "missing 'tileShapes' (per policy, the compiled tile shapes)");
    for (const k of Object.keys(t)) if (!(k in NA_RANK)) fail(`${at}.tileShapes`, `unknown policy '${k}' (expected ${Object.keys(NA_RANK).join(', ')})`);
    const out = {};
    for (const [p, r] of Object.entries(NA_RANK)) {
      const list = t[p] ?? [];
      if (!Array.isArray(list)) fail(`${at}.tileShapes.${p}`, 'expected a list of tile shapes');
      const seen = new Set();
      for (const shape of list) {
        const ok = Array.isArray(shape) && shape.length === r && shape.every((x) => Number.isInteger(x) && x >= 1 && (x & (x - 1)) === 0) &&
          shape.reduce((a, b) => a * b, 1) === POLICY_TILE;
        if (!ok) fail(`${at}.tileShapes.${p}`, `a tile shape is ${r} powers of two whose product is ${POLICY_TILE}, received ${JSON.stringify(shape)}`);
        if (seen.has(shape.join('x'))) fail(`${at}.tileShapes.${p}`, `duplicate tile shape ${shape.join('x')}`);
        seen.add(shape.join('x'));
      }
      out[p] = list.map((x) => [...x]);
    }
    return { tileShapes: out };
  },
  check(family, at) {
    for (const e of family.instantiations)
      if (family.tileShapes[e.policy].length === 0) fail(at, `tileShapes.${e.policy} is empty, but ${kernelName(e)} is listed`);
  },
  emit: (family) => emitFmha(family, `
namespace attnkit::cuda::neighborhood {

// The tile shapes the dispatch accepts (instantiations.json, tileShapes), per rank.
inline constexpr TileShape kTileShapes[] = {
${Object.entries(NA_RANK).flatMap(([p, r]) => family.tileShapes[p].map((t) =>
    `    {${r}, {${[...t, 1, 1].slice(0, 3).join(', ')}}},`)).join('\n')}
};
inline constexpr int kTileShapeCount = ${Object.values(family.tileShapes).reduce((n, l) => n + l.length, 0)};

}  // namespace attnkit::cuda::neighborhood
`),
};

/** Emitters by family: the families whose kernels exist. A family without one has no instantiations. */
const EMITTERS = { fmha, merge, selection, blockSparse, neighborhood };

// ------------------------------------------------------------------ the list

const fail = (where, what) => {
  throw new Error(`${where}: ${what}`);
};
const exactKeys = (obj, required, optional, where) => {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) fail(where, 'expected an object');
  for (const k of required) if (!(k in obj)) fail(where, `missing '${k}'`);
  for (const k of Object.keys(obj))
    if (!required.includes(k) && !optional.includes(k))
      fail(where, `unknown key '${k}' (expected ${[...required, ...optional].join(', ')})`);
};

function readTile(t, fallback, where) {
  if (t === undefined) return fallback;
  exactKeys(t, TILE_KEYS, [], `${where}.tile`);
  for (const k of TILE_KEYS)
    if (!Number.isInteger(t[k]) || t[k] <= 0) fail(`${where}.tile`, `${k} must be a positive integer, received ${JSON.stringify(t[k])}`);
  return { bm: t.bm, bn: t.bn, warps: t.warps };
}

/**
 * Reads and validates the list against the backend table's op names; throws with a message naming
 * the family or entry. Returns the families, each entry completed with `family` and its `tile`.
 */
export function readFamilies(path = LIST, ops = backendOps()) {
  const doc = JSON.parse(readFileSync(path, 'utf8'));
  if (!doc || !Array.isArray(doc.families)) throw new Error(`${path}: expected {"families": [...]}`);
  const servedBy = new Map();
  const names = new Set();
  return doc.families.map((f, i) => {
    const at = `${path}: families[${i}]${f && typeof f.family === 'string' ? ` (${f.family})` : ''}`;
    exactKeys(f, ['family', 'title', 'ops', 'instantiations'], ['dir', 'sources', 'tile', 'issue', ...(EMITTERS[f.family]?.familyKeys ?? [])], at);
    if (!/^[a-z][A-Za-z0-9]*$/.test(f.family)) fail(at, `family must be a lower camel-case name, received '${f.family}'`);
    if (names.has(f.family)) fail(at, `duplicate family '${f.family}'`);
    names.add(f.family);
    if (!f.ops || typeof f.ops !== 'object' || Object.keys(f.ops).length === 0) fail(at, 'ops must map each direction to an op');
    for (const [direction, op] of Object.entries(f.ops)) {
      if (!ops.has(op)) fail(at, `ops.${direction} '${op}' is not an op of the backend table (native/ops/ops.cc: ${[...ops].join(', ')})`);
      if (servedBy.has(op)) fail(at, `op '${op}' is already served by family '${servedBy.get(op)}'`);
      servedBy.set(op, f.family);
    }
    if (!Array.isArray(f.instantiations)) fail(at, 'instantiations must be a list');
    const emitter = EMITTERS[f.family];
    if (!emitter) {
      if (f.instantiations.length > 0)
        fail(at, `family '${f.family}' has no kernels in scripts/gen-instantiations.mjs yet (emitters: ` +
          `${Object.keys(EMITTERS).join(', ')}); its instantiations must stay empty`);
      return { family: f.family, title: f.title, ops: { ...f.ops }, instantiations: [] };
    }
    if (typeof f.dir !== 'string' || !existsSync(join(root, f.dir))) fail(at, `dir must name the family's folder, received ${JSON.stringify(f.dir)}`);
    for (const d of Object.keys(f.ops))
      if (!emitter.directions.includes(d)) fail(at, `ops.${d}: the ${f.family} kernels have directions ${emitter.directions.join(', ')}`);
    const sources = f.sources ?? [];
    for (const s of sources) if (!existsSync(join(root, f.dir, s))) fail(at, `sources: ${f.dir}/${s} does not exist`);
    const familyTile = emitter.tiled ? readTile(f.tile, undefined, at) : undefined;
    if (emitter.tiled && !familyTile) fail(at, "missing 'tile' (the default tile shape of its instantiations)");
    if (!emitter.tiled && f.tile !== undefined) fail(at, `the ${f.family} kernels have no tile shape: remove 'tile'`);
    const seen = new Set();
    const instantiations = f.instantiations.map((e, j) => {
      const where = `${at}: instantiations[${j}]`;
      exactKeys(e, emitter.keys, emitter.tiled ? ['tile'] : [], where);
      if (!(e.direction in f.ops)) fail(where, `direction must be one of ${Object.keys(f.ops).join(', ')} (the family's ops), received '${e.direction}'`);
      if (!emitter.dtypes.includes(e.dtype)) fail(where, `dtype must be one of ${emitter.dtypes.join(', ')}, received '${e.dtype}'`);
      if (emitter.headDim && !emitter.headDim.ok(e.headDim))
        fail(where, `headDim must be ${emitter.headDim.text}, received ${JSON.stringify(e.headDim)}`);
      if (emitter.policies && !(e.policy in emitter.policies))
        fail(where, `policy must be one of ${Object.keys(emitter.policies).join(', ')}, received '${e.policy}'`);
      const tile = emitter.tiled ? readTile(e.tile, familyTile, where) : undefined;
      const why = emitter.tiled ? emitter.tile(tile) : '';
      if (why) fail(where, `tile: ${why}`);
      const key = emitter.keys.map((k) => e[k]).join('/');
      if (seen.has(key)) fail(where, `duplicate instantiation ${key}`);
      seen.add(key);
      const entry = { family: f.family, direction: e.direction, dtype: e.dtype };
      if (emitter.headDim) entry.headDim = e.headDim;
      if (emitter.policies) entry.policy = e.policy;
      if (emitter.tiled) entry.tile = tile;
      return entry;
    });
    const own = emitter.readFamily ? emitter.readFamily(f, at) : {};
    const family = { family: f.family, title: f.title, dir: f.dir, sources, ops: { ...f.ops }, ...(familyTile ? { tile: familyTile } : {}), ...own, instantiations };
    emitter.check?.(family, at);
    return family;
  });
}

/** Every instantiation of every family, in list order (each with `family` and `tile`). */
export function readList(path = LIST) {
  return readFamilies(path).flatMap((f) => f.instantiations);
}

// ------------------------------------------------------------------ outputs

/** The support rows of every op the families serve, in list order: op -> {family, title, rows}. */
export function supportRows(families) {
  const out = new Map();
  for (const f of families)
    for (const [direction, op] of Object.entries(f.ops))
      out.set(op, {
        family: f.family,
        title: f.title,
        rows: f.instantiations.filter((e) => e.direction === direction).map((e) => ({
          dtype: DTYPES[e.dtype].name,
          headDim: e.headDim ?? 0,  // 0: any (the kernel takes the head dim at run time)
          valueHeadDim: e.headDim ?? 0,
          policy: e.policy ?? 'none',
          ...(e.tile ? { tile: e.tile } : {}),
          kernel: kernelName(e),
        })),
      });
  return out;
}

const DTYPE_ENUM = Object.fromEntries(Object.values(DTYPES).map((d) => [d.name, d.dtype]));

function supportsHeader(families) {
  const table = supportRows(families);
  let h = `${header('the CUDA support table of every op a kernel family serves')}//
// One row per compiled kernel: the dtype, the head dims (D, Dv) and the mask policy it runs. Read by
// cuda::support (native/cuda/device_attention.cu: "" or what is supported, before anything is
// enqueued; the stub build answers "built without CUDA") and by the CUDA column of the backend table
// (native/ops/ops.cc), where an op with rows must have a CUDA kernel and an op without rows none.
#pragma once
#include "attnkit/dtype.h"

namespace attnkit::cuda::supported {

struct Row {
  DType dtype;
  int head_dim;        // D of q and k
  int value_head_dim;  // Dv
  const char* policy;
  const char* kernel;  // the kernel's name in its family's dispatch table
};

struct OpTable {
  const char* op;      // as in the backend table
  const char* family;  // in native/cuda/instantiations.json
  const char* title;   // what the family's kernels are called in messages
  const Row* rows;
  int count;
};
`;
  for (const [op, t] of table) {
    h += `\n// ${op}: family ${t.family}, ${t.rows.length} kernel${t.rows.length === 1 ? '' : 's'}\n`;
    if (t.rows.length > 0) {
      h += `inline constexpr Row ${op}_rows[] = {\n${t.rows.map((r) =>
        `    {${DTYPE_ENUM[r.dtype]}, ${r.headDim}, ${r.valueHeadDim}, "${r.policy}", "${r.kernel}"},`).join('\n')}\n};\n`;
    }
    h += `inline constexpr OpTable ${op}{"${op}", "${t.family}", "${t.title}", ${t.rows.length ? `${op}_rows` : 'nullptr'}, ${t.rows.length}};\n`;
  }
  h += `\n// Every op above, in list order.\ninline constexpr const OpTable* all[] = {${[...table.keys()].map((op) => `&${op}`).join(', ')}};\n`;
  h += '\n}  // namespace attnkit::cuda::supported\n';
  return h;
}

function kernelsJson(families, unitsOf) {
  const table = supportRows(families);
  return JSON.stringify({
    $comment: `Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit. The CUDA kernels of every ` +
      'family, per op (what native/cuda/generated/supports.h holds), with their translation units and dynamic shared ' +
      'memory; read by src/info.ts (attnkit info).',
    families: families.map((f) => ({
      family: f.family,
      title: f.title,
      ...(f.tileShapes ? { tileShapes: f.tileShapes } : {}),
      ops: Object.values(f.ops).map((op) => ({
        op,
        kernels: table.get(op).rows.map((r) => ({ ...r, units: unitsOf.get(r.kernel) ?? [] })),
      })),
    })),
  }, null, 2) + '\n';
}

/** Every output file: repository-relative path -> content. */
export function generate(families) {
  const files = new Map();
  const unitsOf = new Map();  // kernel name -> [{file, dynamicSmem}]
  const cmake = [];
  for (const f of families) {
    const emitter = EMITTERS[f.family];
    if (!emitter || f.instantiations.length === 0) continue;
    const { files: own, units } = emitter.emit(f);
    const gen = `${f.dir}/generated`;
    const variable = `ATTNKIT_${f.family.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}_CUDA_SOURCES`;
    own.set('sources.cmake', `# Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit.
set(${variable}
${[...f.sources.map((s) => `${f.dir}/${s}`), ...units.map((u) => u.path)].map((p) => `  ${p}`).join('\n')}
)
`);
    for (const [name, text] of own) files.set(`${gen}/${name}`, text);
    for (const u of units)
      for (const name of u.serves) {
        if (!unitsOf.has(name)) unitsOf.set(name, []);
        unitsOf.get(name).push({ file: u.path, dynamicSmem: u.dynamicSmem });
      }
    cmake.push({ gen, variable });
  }
  files.set(`${COMMON_DIR}/supports.h`, supportsHeader(families));
  files.set(`${COMMON_DIR}/kernels.json`, kernelsJson(families, unitsOf));
  files.set(`${COMMON_DIR}/sources.cmake`, `# Generated by scripts/gen-instantiations.mjs from ${LIST_PATH}; do not edit.
# Every kernel family's CUDA sources (hand-written launchers and generated translation units).
${cmake.map((c) => `include(\${CMAKE_SOURCE_DIR}/${c.gen}/sources.cmake)`).join('\n')}
set(ATTNKIT_GENERATED_CUDA_SOURCES${cmake.map((c) => ` \${${c.variable}}`).join('')})
`);
  return files;
}

// Files the generator owns in an output folder (anything else there is left alone).
const OWNED = /^(\w+\.cu|dispatch\.h|supports\.h|sources\.cmake|gate\.json|kernels\.json)$/;

/** Output folders of a run: the common one, every emitting family's, and stale owned files in them. */
function outputDirs(families) {
  const dirs = new Set([COMMON_DIR]);
  for (const f of families) if (f.dir) dirs.add(`${f.dir}/generated`);
  return [...dirs];
}

export function main(argv) {
  const check = argv.includes('--check');
  let families;
  let files;
  try {
    families = readFamilies();
    files = generate(families);
  } catch (e) {
    console.error(`gen-instantiations: ${e.message}`);
    return 2;
  }
  const stale = outputDirs(families).flatMap((d) =>
    existsSync(join(root, d)) ? readdirSync(join(root, d)).filter((f) => OWNED.test(f)).map((f) => `${d}/${f}`) : [],
  ).filter((p) => !files.has(p));
  if (check) {
    const problems = [];
    for (const [path, text] of files) {
      if (!existsSync(join(root, path))) problems.push(`missing ${path}`);
      else if (readFileSync(join(root, path), 'utf8') !== text) problems.push(`differs ${path}`);
    }
    for (const f of stale) problems.push(`stale ${f}`);
    if (problems.length > 0) {
      console.error(`gen-instantiations: the generated files are out of date with ${LIST_PATH} ` +
        `(run node scripts/gen-instantiations.mjs):\n  ${problems.join('\n  ')}`);
      return 1;
    }
    console.log(`gen-instantiations: ${files.size} generated files up to date`);
    return 0;
  }
  for (const f of stale) rmSync(join(root, f));
  for (const [path, text] of files) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    if (!existsSync(join(root, path)) || readFileSync(join(root, path), 'utf8') !== text) writeFileSync(join(root, path), text);
  }
  console.log(`gen-instantiations: wrote ${files.size} files` + (stale.length ? ` (removed ${stale.length} stale)` : ''));
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exit(main(process.argv.slice(2)));
}
