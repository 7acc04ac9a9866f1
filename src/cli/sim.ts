/**
 * `attnkit sim`: upper bounds of the neighborhood-attention speedup over dense attention (FLOP
 * ratio, tile level) and whether the tiles are fully block-sparse (src/bench/neighborhood.ts), for
 * the CPU kernel's tile choice and, next to it, the CUDA kernel's (the same planner over the tile
 * shapes the CUDA kernels are built for: chooseTileShape(…, 'cuda')).
 */
import { fmt, formatTable } from '../bench/common.js';
import { axesStr, naProblem, type NaCliOpts } from './options.js';

export async function simCommand(opts: NaCliOpts & { json?: boolean }): Promise<void> {
  const p = naProblem(opts);
  const { simulate, simulateTile } = await import('../bench/neighborhood.js');
  const { chooseTileShape } = await import('../index.js');  // dynamic: the addon loads after --threads
  const r = simulate(p, opts.tile);
  const cudaTile = opts.tile ?? chooseTileShape(
    { rank: p.input.length, size: p.input, kernel: p.kernel, stride: p.stride, dilation: p.dilation, causal: p.causal }, 'cuda');
  const { visible: _v, ...cuda } = simulateTile(p, cudaTile);
  if (opts.json) {
    console.log(JSON.stringify({ ...r, cuda }, null, 2));
    return;
  }
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const s = r.selected;
  const lines = [
    `attnkit sim: ${p.op} input ${axesStr(p.input)}, kernel ${axesStr(p.kernel)}, stride ${axesStr(p.stride)}, ` +
      `dilation ${axesStr(p.dilation)}, causal ${axesStr(p.causal)}`,
    `tokens ${r.tokens}, visible pairs ${r.visible} (${fmt(r.visible / r.tokens, 4)} per query)`,
    `FLOP-ratio upper bound (N^2 / visible):             ${fmt(r.flopBound, 4)}x`,
    `tile ${axesStr(s.tile)}${opts.tile ? '' : ' (the kernel\'s choice)'}: ${s.fullPairs} full + ${s.partialPairs} partial tile pairs ` +
      `of ${s.densePairs} dense`,
    `tile-level upper bound (dense / visited tile pairs): ${fmt(s.tileBound, 4)}x`,
    `fully block-sparse: ${yes(s.fullyBlockSparse)}${s.fullyBlockSparse ? ' (no element masking)' : ` (${s.partialPairs} tile pairs need element masks)`}`,
    `CUDA tile ${axesStr(cuda.tile)}${opts.tile ? '' : ' (the CUDA kernel\'s choice)'}: ${cuda.fullPairs} full + ${cuda.partialPairs} partial ` +
      `tile pairs, tile-level bound ${fmt(cuda.tileBound, 4)}x${cuda.tile.join() === s.tile.join() ? ' (the same tile as the CPU)' : ''}`,
  ];
  if (r.candidates.length > 1) {
    const rows = [
      ['tile', 'full', 'partial', 'tile bound', 'block-sparse', 'note'],
      ...r.candidates.map((c) => [
        axesStr(c.tile),
        String(c.fullPairs),
        String(c.partialPairs),
        `${fmt(c.tileBound, 4)}x`,
        yes(c.fullyBlockSparse),
        c.tile.join() === r.chosenTile.join() ? '<- chosen' : '',
      ]),
    ];
    lines.push('', 'every candidate tile shape (64 tokens, powers of two):', formatTable(rows, new Set([1, 2, 3])));
  }
  console.log(lines.join('\n'));
}
