/**
 * attnkit: fused efficient-attention kernels for Node.js. Public surface only; implementation
 * lives in the modules re-exported here.
 */
export { DTYPES, type DType, type FloatDType, type ArrayFor } from './dtype.js';
export { AttnkitError, type AttnkitErrorCode } from './errors.js';
export {
  Tensor,
  tensor,
  empty,
  zeros,
  randn,
  memory,
  fromDevicePointer,
  type TensorData,
  type TensorOptions,
  type CopyOptions,
  type FromDevicePointerOptions,
} from './tensor.js';
export { Stream, defaultStream, synchronize, type Device } from './stream.js';
export {
  attention,
  attentionBackward,
  type AttentionOptions,
  type AttentionBackwardOptions,
  type AttentionResult,
  type AttentionGrads,
} from './ops/attention.js';
export {
  mergeAttention,
  mergeAttentionBackward,
  type AttentionPart,
  type MergeResult,
  type MergeGrads,
} from './ops/merge.js';
export {
  linearAttention,
  linearAttentionBackward,
  linearAttentionStep,
  LINEAR_FEATURE_MAPS,
  LINEAR_NORMALIZE_EPS,
  type LinearAttentionOptions,
  type LinearAttentionBackwardOptions,
  type LinearAttentionResult,
  type LinearAttentionGrads,
  type LinearAttentionStepOptions,
  type LinearAttentionStepResult,
  type LinearDecay,
  type LinearFeatureMap,
} from './ops/linear.js';
export {
  na1d,
  na2d,
  na3d,
  na1dBackward,
  na2dBackward,
  na3dBackward,
  neighborhoodPlan,
  chooseTileShape,
  type NeighborhoodOptions,
  type NeighborhoodBackwardOptions,
  type NeighborhoodResult,
  type NeighborhoodGrads,
  type NeighborhoodPlan,
  type NaParams,
  type PerAxis,
} from './ops/neighborhood.js';
export { BlockMask, type BlockMaskData, type BlockMaskGeometry, type BlockSizes, type NeighborhoodMaskParams } from './masks/block-mask.js';
export {
  blockSparseAttention,
  blockSparseAttentionBackward,
  type BlockSparseOptions,
  type BlockSparseBackwardOptions,
  type BlockSparseResult,
} from './ops/block-sparse.js';
export {
  mobaMask,
  xattentionMask,
  type MobaOptions,
  type MobaResult,
  type XattentionOptions,
  type XattentionResult,
} from './ops/selection.js';
export { info, cuda, cpu, type Info, type CudaKernel } from './info.js';
/**
 * The float64 references of every op, forward and backward: plain loops written from the semantics
 * in docs/, the ground truth of attnkit's tests and benchmarks. Arrays are flat, row-major, in the
 * op's layout.
 */
export * as reference from './reference/index.js';
