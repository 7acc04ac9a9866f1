#!/usr/bin/env node
/**
 * The Layer-1 compile gate for CUDA kernels (docs/gpu-verification.md): compiles each given .cu file
 * for each gated architecture, reads what ptxas reports per kernel (registers, shared memory, stack
 * frame, spills) into a machine-readable report, and fails when
 *   - any kernel (or non-inlined device function) spills registers or uses local memory;
 *   - a kernel marked as a tensor-core kernel has no `mma.sync` in its PTX (a kernel that silently
 *     fell off the tensor-core path);
 *   - a kernel exceeds a register or shared-memory budget given for it;
 *   - a file does not compile, or calls a host function from host+device code (nvcc warning 20011,
 *     made an error: nvcc would drop that path from the device code);
 *   - (--ptx-check) a wrapper's device PTX differs from the variant the SIMT emulator implements.
 * Each file is compiled once per arch: `nvcc -ptx -arch=compute_XX` (the PTX the tripwire reads),
 * then `ptxas -arch=sm_XX -v -warn-spills -warn-lmem-usage` on that PTX (what nvcc does for sm_XX).
 *
 * Usage:
 *   node scripts/compile-gate.mjs [options] file.cu...
 *   node scripts/compile-gate.mjs --manifest kernels.json [options]
 * Options:
 *   --arch 80,90            architectures to gate (default 80,90)
 *   --tensor-core REGEX     kernels whose name (demangled or mangled) matches must contain mma.sync;
 *                           repeatable; applies to the files given on the command line
 *   --max-registers N       register budget for every kernel of the command-line files
 *   --max-smem BYTES        shared-memory budget: static (from ptxas) + dynamic (below)
 *   --dynamic-smem BYTES    dynamic shared memory the launch code requests (ptxas cannot know it);
 *                           recorded in the report and counted against --max-smem
 *   -I DIR, -D NAME[=VAL]   passed to nvcc (also -IDIR, -DNAME)
 *   --nvcc PATH             default: $CUDACXX, $CUDA_PATH/bin/nvcc, /usr/local/cuda/bin/nvcc, nvcc
 *   --out FILE              report path (default build/compile-gate/report.json)
 *   --jobs N                parallel compilations (default: available cores)
 *   --quiet                 no table on stdout
 *   --ptx-check FILE.cu     the PTX check: FILE has a kernel ptx_<wrapper> per inline-asm wrapper of the
 *                           --ptx-header; built by g++ it prints the instruction the emulator models
 *                           for each (test/compile-gate/ptx_wrappers.cu), built by nvcc -ptx per arch
 *                           it holds the device strings; every wrapper must agree, instruction by
 *                           instruction (mnemonic and modifiers, operand count, immediates)
 *   --ptx-header PATH       default native/cuda/ptx.cuh; its folder is the include path of FILE
 * Manifest (JSON): {"entries": [{"file": "a.cu", "tensorCore": ["regex"] | true, "defines": ["X=1"],
 *   "includes": ["dir"], "maxRegisters": 128, "maxSmem": 49152, "dynamicSmem": 0}]}; paths relative
 *   to the manifest.
 *   tensorCore: true marks every kernel of the file. Later kernels plug in by adding entries (or by a
 *   generated manifest from the instantiation list).
 * Exit status: 0 gate passed, 1 gate failed (violations listed, report written), 2 usage or tool error.
 * Report: {tool, nvcc, archs, ok, kernels: [{kernel, mangled, file, arch, entry, registers, smem,
 *   dynamicSmem, spillStores, spillLoads, stackFrame, barriers, mma, ldmatrix, cpAsync, tensorCore,
 *   violations}], ptx: [{wrapper, arch, device, emulator, ok}], violations}. smem is static shared
 *   memory as ptxas reports it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Locates nvcc: explicit path, $CUDACXX, $CUDA_PATH/bin, /usr/local/cuda/bin, then PATH. */
export function findNvcc(explicit) {
  const candidates = [explicit, process.env.CUDACXX, process.env.CUDA_PATH && join(process.env.CUDA_PATH, 'bin', 'nvcc'),
    process.env.CUDA_HOME && join(process.env.CUDA_HOME, 'bin', 'nvcc'), '/usr/local/cuda/bin/nvcc'].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return c;
  const r = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? 'nvcc' : null;
}

/**
 * Parses `ptxas -v` output into one record per function: entry kernels get registers, barriers,
 * static smem; every function gets its stack frame and spills; local-memory and spill warnings are
 * attached to the function they name.
 */
export function parsePtxasOutput(text) {
  const fns = new Map();
  const get = (name) => {
    if (!fns.has(name)) {
      fns.set(name, { mangled: name, entry: false, registers: null, barriers: null, smem: 0, stackFrame: 0,
        spillStores: 0, spillLoads: 0, warnings: [] });
    }
    return fns.get(name);
  };
  let entry = null;
  let props = null;
  for (const line of text.split(/\r?\n/)) {
    let m;
    if ((m = /Compiling entry function '([^']+)'/.exec(line))) {
      entry = get(m[1]);
      entry.entry = true;
      props = null;
    } else if ((m = /Function properties for (\S+)/.exec(line))) {
      props = get(m[1]);
    } else if ((m = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line))) {
      if (props) {
        props.stackFrame = Number(m[1]);
        props.spillStores = Number(m[2]);
        props.spillLoads = Number(m[3]);
      }
    } else if ((m = /Used (\d+) registers/.exec(line))) {
      if (entry) {
        entry.registers = Number(m[1]);
        const b = /used (\d+) barriers/.exec(line);
        entry.barriers = b ? Number(b[1]) : 0;
        const s = /(\d+) bytes smem/.exec(line);
        entry.smem = s ? Number(s[1]) : 0;
      }
    } else if ((m = /ptxas warning\s*:\s*(.*(?:local memory|Local memory|spill).*)/.exec(line))) {
      const name = /function '([^']+)'/.exec(m[1]);
      if (name) get(name[1]).warnings.push(m[1].trim());
    }
  }
  return [...fns.values()];
}

/** The functions of a PTX module: {kind: 'entry' | 'func', name, body} with body the brace block. */
export function* ptxBodies(ptx) {
  const header = /^[ \t]*(?:\.visible[ \t]+|\.weak[ \t]+)?\.(entry|func)[ \t]+(?:\([^)]*\)[ \t]*)?([\w$.]+)/gm;
  let m;
  while ((m = header.exec(ptx))) {
    // The body is the brace block after the parameter list; a declaration ends with ';' first.
    let i = header.lastIndex;
    let depthParen = 0;
    for (; i < ptx.length; ++i) {
      const c = ptx[i];
      if (c === '(') depthParen++;
      else if (c === ')') depthParen--;
      else if (depthParen === 0 && (c === '{' || c === ';')) break;
    }
    if (ptx[i] !== '{') continue;
    let depth = 0;
    let j = i;
    for (; j < ptx.length; ++j) {
      if (ptx[j] === '{') depth++;
      else if (ptx[j] === '}' && --depth === 0) break;
    }
    yield { kind: m[1], name: m[2], body: ptx.slice(i, j + 1) };
    header.lastIndex = j + 1;
  }
}

/**
 * The functions of a PTX module with their instruction counts (mma.sync, ldmatrix, cp.async), and
 * for entries the counts summed over every function they call, transitively.
 */
export function ptxFunctions(ptx) {
  const fns = new Map();
  for (const { kind, name, body } of ptxBodies(ptx)) {
    const count = (re) => (body.match(re) ?? []).length;
    const calls = new Set();
    for (const c of body.matchAll(/\bcall(?:\.uni)?\s+(?:\([^)]*\)\s*,\s*)?([\w$.]+)/g)) calls.add(c[1]);
    fns.set(name, {
      name, entry: kind === 'entry',
      mma: count(/\bmma\.sync\.aligned\.m16n8k16\b/g),
      ldmatrix: count(/\bldmatrix\.sync\.aligned\b/g),
      cpAsync: count(/\bcp\.async\.c[ag]\.shared\.global\b/g),
      calls: [...calls],
    });
  }
  const total = (name, seen) => {
    const f = fns.get(name);
    if (!f || seen.has(name)) return { mma: 0, ldmatrix: 0, cpAsync: 0 };
    seen.add(name);
    const t = { mma: f.mma, ldmatrix: f.ldmatrix, cpAsync: f.cpAsync };
    for (const c of f.calls) {
      const s = total(c, seen);
      t.mma += s.mma;
      t.ldmatrix += s.ldmatrix;
      t.cpAsync += s.cpAsync;
    }
    return t;
  };
  for (const f of fns.values()) Object.assign(f, { totals: total(f.name, new Set()) });
  return fns;
}

/** One PTX instruction in the gate's canonical form: registers as %, single spaces, no ';'. */
export function canonicalInstruction(text) {
  return text.replace(/;\s*$/, '').replace(/%[a-z]+\d*/g, '%').replace(/\s+/g, ' ').replace(/\s*,\s*/g, ', ')
    .replace(/([{[])\s+/g, '$1').replace(/\s+([}\]])/g, '$1').trim();
}

/**
 * The inline-asm instructions of a PTX function body, in order and canonical (nvcc brackets each asm
 * statement with "// begin inline asm" / "// end inline asm"). cp.async.wait_all is spelled as the
 * pair the PTX ISA defines it to be: cp.async.commit_group; cp.async.wait_group 0.
 */
export function inlineAsm(body) {
  const out = [];
  for (const m of body.matchAll(/\/\/ begin inline asm\n([\s\S]*?)\/\/ end inline asm/g)) {
    for (const ins of m[1].split(';').map(canonicalInstruction).filter(Boolean)) {
      if (ins === 'cp.async.wait_all') out.push('cp.async.commit_group', 'cp.async.wait_group 0');
      else out.push(ins);
    }
  }
  return out;
}

/** The names of the wrappers in a ptx.cuh text that hold inline asm. */
export function asmWrappers(header) {
  const starts = [...header.matchAll(/ATTNKIT_DEVICE\s+[\w:<>]+\s+(\w+)\s*\(/g)];
  return starts.filter((m, i) => /\basm\s+volatile\s*\(/.test(header.slice(m.index, starts[i + 1]?.index ?? header.length)))
    .map((m) => m[1]);
}

/** The listing the g++ build of the PTX-check file prints: "== kernel" lines, then its instructions. */
export function parseEmulatorListing(text) {
  const map = new Map();
  let cur = null;
  for (const line of text.split('\n')) {
    const m = /^== (\S+)$/.exec(line);
    if (m) map.set((cur = m[1]), []);
    else if (cur && line.trim()) map.get(cur).push(canonicalInstruction(line));
  }
  return map;
}

function cudaIncludeFor(nvcc) {
  const dirs = [process.env.CUDA_PATH, process.env.CUDA_HOME, nvcc.includes('/') ? dirname(dirname(nvcc)) : null,
    '/usr/local/cuda'].filter(Boolean).map((d) => join(d, 'include'));
  return dirs.find((d) => existsSync(join(d, 'cuda_fp16.h'))) ?? null;
}

/**
 * The PTX check: every inline-asm wrapper of the header (native/cuda/ptx.cuh) against the variant the
 * SIMT emulator implements. `file` has one kernel ptx_<wrapper> per wrapper; compiled by g++ it prints
 * what the wrappers' emulator branches call (test/compile-gate/ptx_wrappers.cu), compiled by nvcc -ptx
 * per arch it holds the device strings. Returns {rows, violations}.
 */
async function ptxCheck(file, headerPath, archs, nvcc, tmp) {
  const violations = [];
  const rows = [];
  const inc = dirname(headerPath);
  const cudaInc = cudaIncludeFor(nvcc);
  if (!cudaInc) return { rows, violations: [`${rel(file)}: CUDA headers not found for the g++ build (set CUDA_PATH)`] };
  const exe = join(tmp, 'ptx-check-host');
  const host = await run('g++', ['-std=c++17', '-x', 'c++', `-I${cudaInc}`, `-I${inc}`, file, '-o', exe]);
  if (host.status !== 0) return { rows, violations: [`${rel(file)} (g++): ${host.stderr}${host.stdout}`.trim()] };
  const listing = await run(exe, []);
  if (listing.status !== 0) return { rows, violations: [`${rel(file)}: the g++ build exited with ${listing.status}`] };
  const emulator = parseEmulatorListing(listing.stdout);
  const wrappers = asmWrappers(readFileSync(headerPath, 'utf8'));
  if (wrappers.length === 0) violations.push(`${rel(headerPath)}: no wrapper with inline asm found`);
  const results = await Promise.all(archs.map(async (arch) => {
    const out = join(tmp, `ptx-check-${arch}.ptx`);
    const r = await run(nvcc, ['-ptx', `-arch=compute_${arch}`, '-std=c++17', ...NVCC_DIAGNOSTICS, `-I${inc}`, file, '-o', out]);
    return { arch, error: r.status !== 0 ? `${r.stderr}${r.stdout}` : null, ptx: r.status === 0 ? readFileSync(out, 'utf8') : '' };
  }));
  for (const { arch, error, ptx } of results) {
    if (error) {
      violations.push(`${rel(file)} (sm_${arch}): nvcc -ptx failed:\n${error.trim()}`);
      continue;
    }
    const device = new Map([...ptxBodies(ptx)].filter((f) => f.kind === 'entry').map((f) => [f.name, inlineAsm(f.body)]));
    for (const w of wrappers) {
      const kernel = `ptx_${w}`;
      const dev = device.get(kernel);
      const emu = emulator.get(kernel);
      const v = [];
      if (!dev) v.push(`no kernel ${kernel} in ${rel(file)} (every inline-asm wrapper needs one)`);
      else if (!emu) v.push(`the g++ build of ${rel(file)} does not run ${kernel}`);
      else if (dev.length === 0) v.push('no inline asm in the device PTX');
      else if (JSON.stringify(dev) !== JSON.stringify(emu)) {
        v.push(`the device PTX is "${dev.join('; ')}" but the emulator models "${emu.join('; ')}"`);
      }
      rows.push({ wrapper: w, arch: `sm_${arch}`, device: dev ?? [], emulator: emu ?? [], ok: v.length === 0 });
      for (const x of v) violations.push(`${rel(headerPath)} ${w} (sm_${arch}): ${x}`);
    }
  }
  return { rows, violations };
}

/** Demangles names with c++filt when it is available. */
function demangleAll(names) {
  if (names.length === 0) return new Map();
  const r = spawnSync('c++filt', [], { input: names.join('\n'), encoding: 'utf8' });
  const out = r.status === 0 ? r.stdout.split('\n') : [];
  return new Map(names.map((n, i) => [n, out[i] && out[i].length > 0 ? out[i] : n]));
}

function run(cmd, args) {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => resolvePromise({ status: -1, stdout, stderr: stderr + String(e) }));
    child.on('close', (status) => resolvePromise({ status, stdout, stderr }));
  });
}

async function pool(tasks, jobs) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, tasks.length)) }, worker));
  return results;
}

function usage(msg) {
  if (msg) console.error(`compile-gate: ${msg}`);
  console.error('usage: node scripts/compile-gate.mjs [--arch 80,90] [--tensor-core REGEX]... [--out FILE] file.cu...\n' +
    '       node scripts/compile-gate.mjs --manifest kernels.json [options]');
  return 2;
}

export function parseArgs(argv) {
  const o = { archs: ['80', '90'], tensorCore: [], files: [], includes: [], defines: [], out: null, nvcc: null,
    manifest: null, jobs: availableParallelism(), quiet: false, maxRegisters: null, maxSmem: null, dynamicSmem: 0,
    ptxCheck: null, ptxHeader: join(root, 'native', 'cuda', 'ptx.cuh') };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--arch') o.archs = value().split(',').map((s) => s.trim().replace(/^sm_/, '')).filter(Boolean);
    else if (a === '--tensor-core') o.tensorCore.push(value());
    else if (a === '--out') o.out = value();
    else if (a === '--nvcc') o.nvcc = value();
    else if (a === '--manifest') o.manifest = value();
    else if (a === '--ptx-check') o.ptxCheck = value();
    else if (a === '--ptx-header') o.ptxHeader = value();
    else if (a === '--jobs') o.jobs = Number(value());
    else if (a === '--max-registers') o.maxRegisters = Number(value());
    else if (a === '--max-smem') o.maxSmem = Number(value());
    else if (a === '--dynamic-smem') o.dynamicSmem = Number(value());
    else if (a === '--quiet') o.quiet = true;
    else if (a === '-I') o.includes.push(value());
    else if (a.startsWith('-I')) o.includes.push(a.slice(2));
    else if (a === '-D') o.defines.push(value());
    else if (a.startsWith('-D')) o.defines.push(a.slice(2));
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else o.files.push(a);
  }
  for (const arch of o.archs) if (!/^\d+[a-z]?$/.test(arch)) throw new Error(`bad --arch value '${arch}'`);
  for (const re of o.tensorCore) new RegExp(re);
  return o;
}

/** The gate's work list: one entry per .cu file with its flags, tensor-core patterns and budgets. */
function entries(o) {
  const list = o.files.map((f) => ({ file: resolve(f), includes: o.includes.map((d) => resolve(d)),
    defines: o.defines, tensorCore: o.tensorCore, maxRegisters: o.maxRegisters, maxSmem: o.maxSmem,
    dynamicSmem: o.dynamicSmem }));
  if (o.manifest) {
    const path = resolve(o.manifest);
    const base = dirname(path);
    const m = JSON.parse(readFileSync(path, 'utf8'));
    if (!Array.isArray(m.entries)) throw new Error(`${o.manifest}: expected {"entries": [...]}`);
    for (const e of m.entries) {
      if (typeof e.file !== 'string') throw new Error(`${o.manifest}: every entry needs a "file"`);
      list.push({ file: resolve(base, e.file), includes: [...o.includes.map((d) => resolve(d)),
        ...(e.includes ?? []).map((d) => resolve(base, d))], defines: [...o.defines, ...(e.defines ?? [])],
        tensorCore: e.tensorCore === true ? ['.*'] : (e.tensorCore ?? []), maxRegisters: e.maxRegisters ?? o.maxRegisters,
        maxSmem: e.maxSmem ?? o.maxSmem, dynamicSmem: e.dynamicSmem ?? 0 });
    }
  }
  return list;
}

// Warning 20011, a __host__ function (a compiler builtin such as __builtin_ctzll, a std:: call)
// called from a __host__ __device__ function, is an error here: nvcc then emits the device code with
// that path dropped (a kernel whose body compiles to a bare `ret`), so the warning is a broken kernel.
const NVCC_DIAGNOSTICS = ['-diag-error', '20011'];

const rel = (p) => (p.startsWith(root + '/') ? p.slice(root.length + 1) : p);

export async function gate(argv) {
  let o;
  try {
    o = parseArgs(argv);
  } catch (e) {
    return usage(e.message);
  }
  let work;
  try {
    work = entries(o);
  } catch (e) {
    return usage(e.message);
  }
  if (work.length === 0 && !o.ptxCheck) return usage('no .cu files given');
  for (const w of work) if (!existsSync(w.file)) return usage(`no such file: ${w.file}`);
  for (const f of [o.ptxCheck, o.ptxCheck && o.ptxHeader].filter(Boolean)) if (!existsSync(f)) return usage(`no such file: ${f}`);
  const nvcc = findNvcc(o.nvcc);
  if (!nvcc) {
    console.error('compile-gate: nvcc not found (set CUDACXX or CUDA_PATH, or install the CUDA toolkit)');
    return 2;
  }
  const ptxas = nvcc === 'nvcc' ? 'ptxas' : join(dirname(nvcc), 'ptxas');
  const version = spawnSync(nvcc, ['--version'], { encoding: 'utf8' });
  const nvccVersion = /release [\d.]+, V([\d.]+)/.exec(version.stdout ?? '')?.[1] ?? 'unknown';

  const tmp = mkdtempSync(join(tmpdir(), 'attnkit-gate-'));
  const violations = [];
  const kernels = [];
  let ptxRows = [];
  try {
    if (o.ptxCheck) {
      const c = await ptxCheck(resolve(o.ptxCheck), resolve(o.ptxHeader), o.archs, nvcc, tmp);
      ptxRows = c.rows;
      violations.push(...c.violations);
    }
    const tasks = [];
    work.forEach((w, wi) => {
      for (const arch of o.archs) {
        tasks.push(async () => {
          const stem = join(tmp, `${wi}-${basename(w.file, '.cu')}-${arch}`);
          const flags = ['-std=c++17', ...NVCC_DIAGNOSTICS, ...w.includes.map((d) => `-I${d}`), ...w.defines.map((d) => `-D${d}`)];
          const front = await run(nvcc, ['-ptx', `-arch=compute_${arch}`, ...flags, w.file, '-o', `${stem}.ptx`]);
          if (front.status !== 0) return { w, arch, error: `nvcc -ptx failed:\n${front.stderr}${front.stdout}` };
          const back = await run(ptxas, [`-arch=sm_${arch}`, '-v', '-warn-spills', '-warn-lmem-usage', `${stem}.ptx`,
            '-o', `${stem}.cubin`]);
          if (back.status !== 0) return { w, arch, error: `ptxas failed:\n${back.stderr}${back.stdout}` };
          return { w, arch, ptxas: parsePtxasOutput(back.stderr + back.stdout), ptx: ptxFunctions(readFileSync(`${stem}.ptx`, 'utf8')) };
        });
      }
    });
    const results = await pool(tasks, o.jobs);
    const names = [...new Set(results.flatMap((r) => (r.ptxas ?? []).map((f) => f.mangled)))];
    const demangled = demangleAll(names);
    const matched = new Map(work.map((w) => [w, new Set()]));
    for (const r of results) {
      const file = rel(r.w.file);
      if (r.error) {
        violations.push(`${file} (sm_${r.arch}): ${r.error.trim()}`);
        continue;
      }
      for (const f of r.ptxas) {
        const name = demangled.get(f.mangled) ?? f.mangled;
        const counts = r.ptx.get(f.mangled)?.totals ?? { mma: 0, ldmatrix: 0, cpAsync: 0 };
        const tcPatterns = r.w.tensorCore.filter((re) => new RegExp(re).test(name) || new RegExp(re).test(f.mangled));
        for (const p of tcPatterns) matched.get(r.w).add(p);
        const tensorCore = f.entry && tcPatterns.length > 0;
        const v = [];
        if (f.spillStores > 0 || f.spillLoads > 0) v.push(`spills registers (${f.spillStores} bytes stores, ${f.spillLoads} bytes loads)`);
        if (f.stackFrame > 0) v.push(`uses local memory (${f.stackFrame}-byte stack frame)`);
        if (v.length === 0) v.push(...f.warnings);  // a warning without numbers to show for it
        if (tensorCore && counts.mma === 0) v.push('is marked as a tensor-core kernel but its PTX has no mma.sync.aligned.m16n8k16');
        const dynamicSmem = f.entry ? r.w.dynamicSmem : 0;
        if (f.entry && r.w.maxRegisters != null && f.registers > r.w.maxRegisters) v.push(`uses ${f.registers} registers (budget ${r.w.maxRegisters})`);
        if (f.entry && r.w.maxSmem != null && f.smem + dynamicSmem > r.w.maxSmem) {
          v.push(`uses ${f.smem + dynamicSmem} bytes of shared memory (${f.smem} static + ${dynamicSmem} dynamic; budget ${r.w.maxSmem})`);
        }
        kernels.push({ kernel: name, mangled: f.mangled, file, arch: `sm_${r.arch}`, entry: f.entry,
          registers: f.registers, smem: f.smem, dynamicSmem, spillStores: f.spillStores, spillLoads: f.spillLoads,
          stackFrame: f.stackFrame, barriers: f.barriers, mma: counts.mma, ldmatrix: counts.ldmatrix,
          cpAsync: counts.cpAsync, tensorCore, violations: v });
        for (const x of v) violations.push(`${file} sm_${r.arch} ${name}: ${x}`);
      }
    }
    for (const w of work) {
      for (const re of w.tensorCore) {
        if (!matched.get(w).has(re) && !results.some((r) => r.w === w && r.error)) {
          violations.push(`${rel(w.file)}: no kernel matches the tensor-core pattern /${re}/`);
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const report = { tool: 'attnkit compile gate', nvcc: nvccVersion, archs: o.archs.map((a) => `sm_${a}`),
    ok: violations.length === 0, kernels, ptx: ptxRows, violations };
  const out = resolve(o.out ?? join(root, 'build', 'compile-gate', 'report.json'));
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');

  if (!o.quiet) {
    const rows = kernels.filter((k) => k.entry);
    console.log(`compile gate (nvcc ${nvccVersion}): ${rows.length} kernel build(s), report ${rel(out)}`);
    if (rows.length > 0) console.log('arch    regs   smem  +dyn  stack  spill st/ld  mma  ldsm  cp.async  kernel');
    for (const k of rows) {
      console.log(`${k.arch.padEnd(6)} ${String(k.registers).padStart(5)} ${String(k.smem).padStart(6)} ` +
        `${String(k.dynamicSmem).padStart(5)} ` +
        `${String(k.stackFrame).padStart(6)} ${`${k.spillStores}/${k.spillLoads}`.padStart(12)} ` +
        `${String(k.mma).padStart(4)} ${String(k.ldmatrix).padStart(5)} ${String(k.cpAsync).padStart(9)}  ` +
        `${k.kernel}${k.tensorCore ? '  [tensor core]' : ''}`);
    }
  }
  if (!o.quiet && ptxRows.length > 0) {
    console.log(`PTX check of ${rel(resolve(o.ptxHeader))} against the emulator: ${ptxRows.filter((r) => r.ok).length} of ${ptxRows.length} wrapper builds agree`);
    for (const r of ptxRows) console.log(`${r.arch.padEnd(6)} ${r.ok ? 'ok  ' : 'DIFF'} ${r.wrapper.padEnd(20)} ${r.device.join('; ')}`);
  }
  if (violations.length > 0) {
    console.error(`compile gate FAILED (${violations.length} violation(s)):`);
    for (const v of violations) console.error(`  ${v}`);
    return 1;
  }
  if (!o.quiet) console.log('compile gate passed');
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  gate(process.argv.slice(2)).then((code) => process.exit(code), (e) => {
    console.error(`compile-gate: ${e.stack ?? e}`);
    process.exit(2);
  });
}
