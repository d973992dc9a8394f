/**
 * @shardline/datasets: Fashion-MNIST, MNIST and image folders for TensorFlow.js training. IDX reading,
 * verified download and caching, deterministic shuffling, sharding by rank, batching and
 * seeded augmentation. Everything here works without TensorFlow.js; `toTensors` lives in
 * `@shardline/datasets/tensors`.
 */
export {
  type AugmentOptions,
  type EraseOptions,
  identityTransform,
  type Rect,
  renderTransformed,
  type SampleTransform,
  sampleTransform,
} from './augment.js';
export {
  type Batch,
  type BatchOptions,
  makeBatch,
  type NormalizeOptions,
  pixelLut,
} from './batch.js';
export {
  type DatasetDescriptor,
  type DatasetFile,
  type DatasetSplit,
  datasetFiles,
  datasetNames,
  fashionMnist,
  getDataset,
  mnist,
  type PixelStats,
} from './descriptors.js';
export {
  type DownloadAttempt,
  type DownloadedFile,
  type DownloadFileOptions,
  downloadFile,
  type FetchLike,
  type FetchResponseLike,
} from './download.js';
export {
  DEFAULT_REMEDY,
  type DecodeIdxOptions,
  decodeIdx,
  encodeIdx,
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  IDX_UINT8,
  type IdxArray,
  isGzip,
  type ParseIdxOptions,
  parseIdx,
  readIdxFile,
} from './idx.js';
export {
  type ColorMode,
  cacheImageSets,
  IMAGE_FOLDER_CACHE_MAGIC,
  IMAGE_FOLDER_CACHE_VERSION,
  type ImageDecoder,
  type ImageFolderOptions,
  type ImageProbe,
  imageFolderCachePath,
  type LoadedImageFolder,
  loadImageFolder,
  MAX_IMAGE_FOLDER_CLASSES,
  RESIDENT_BYTES_ENV,
  type ReadImageFolderCacheOptions,
  readImageFolderCache,
  type SkippedImage,
  sharpDecoder,
} from './imageFolder.js';
export {
  checkImageSet,
  closeImageSet,
  concatImageSets,
  type ImagePixels,
  type ImageSet,
  imageSize,
  takeImages,
} from './imageSet.js';
export { type IterateBatchesOptions, iterateBatches } from './iterate.js';
export {
  type DatasetSource,
  type LoadDatasetOptions,
  type LoadedDataset,
  loadDataset,
} from './load.js';
export {
  DATA_DIR_ENV,
  type LocationKind,
  type LocationOptions,
  type SearchLocation,
  searchLocations,
  userCacheDir,
} from './locations.js';
export {
  openPagedImages,
  type PagedImages,
  type PagedImagesLayout,
} from './pagedImages.js';
export {
  createProgressReporter,
  type DownloadProgress,
  type ProgressCallback,
  type ProgressMode,
  type ProgressOptions,
  type ProgressReporterOptions,
  type ProgressStream,
} from './progress.js';
export { createRng, type Rng, RngStreams, xoshiro128ss } from './random.js';
export {
  type BatchShareOptions,
  batchShare,
  createEpochPlan,
  type EpochPlan,
  type EpochPlanOptions,
  epochOrder,
  type IndexRange,
  identityOrder,
  type ShardOptions,
  type ShardRemainder,
  type StepOptions,
  shardIndices,
  shardSize,
  shareRange,
  shareSize,
  stepsPerEpoch,
} from './sampler.js';
export {
  SHAPE_CLASSES,
  type ShapesFolder,
  type ShapesFolderOptions,
  writeShapesFolder,
} from './shapes.js';
// Types only: importing the index must not load TensorFlow.js.
export type { BatchTensors } from './tensors.js';
