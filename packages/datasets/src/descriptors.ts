/**
 * What Shardline knows about each dataset: file names, pinned checksums, counts, shape, class
 * names, mirrors. A descriptor is plain data, so a custom dataset in the same IDX layout is one
 * object literal away (pass it to `loadDataset` instead of a name).
 */
import { ShardlineError } from '@shardline/core/errors';

/** One published file of a dataset. */
export interface DatasetFile {
  /** File name as published and as stored, e.g. `train-images-idx3-ubyte.gz`. */
  readonly name: string;
  /**
   * Accepted SHA-256 digests (lowercase hex) of the file as stored. The first is the mirrors'
   * copy; others are known-good repackagings (Debian's copies are re-gzipped without the
   * original file name in the gzip header, so their bytes differ while their content does not).
   */
  readonly sha256: readonly string[];
  /**
   * Accepted SHA-256 digests of the uncompressed IDX bytes. A file whose own digest is unknown
   * (another re-compression, or an uncompressed copy) still verifies when its content matches.
   */
  readonly contentSha256?: readonly string[];
  /** Size in bytes of the mirrors' copy; the progress total when a server sends no length. */
  readonly size?: number;
}

/** The images and labels of one split, and how many samples it holds. */
export interface DatasetSplit {
  readonly images: DatasetFile;
  readonly labels: DatasetFile;
  /** Number of samples, checked against the files. */
  readonly count: number;
}

/** Pixel statistics of the training split, in [0, 1] units (for `normalize`). */
export interface PixelStats {
  readonly mean: number;
  readonly std: number;
}

/**
 * A dataset in IDX format: where to get it, how to check it and what it contains.
 * Checksum lists may be empty for custom data: files are then checked for structure only.
 */
export interface DatasetDescriptor {
  /** Short name, also the directory name under caches and `/usr/share/datasets`. */
  readonly name: string;
  /** Human-readable name for messages. */
  readonly title: string;
  readonly train: DatasetSplit;
  readonly test: DatasetSplit;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  /** Class names, indexed by label. */
  readonly classNames: readonly string[];
  /** Base URLs tried in order; each file is fetched from `<mirror><file name>`. */
  readonly mirrors: readonly string[];
  /** The Debian package that installs the files into `/usr/share/datasets/<name>`, if any. */
  readonly debianPackage?: string;
  /** Mean and standard deviation of the training pixels. */
  readonly pixelStats?: PixelStats;
  readonly homepage?: string;
  readonly license?: string;
}

/**
 * Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): Zalando article images, 60,000 training and
 * 10,000 test, 28x28 greyscale, 10 classes.
 *
 * Checksums: the first digest of each file is the zalando research mirror's copy (the files
 * whose MD5s the Fashion-MNIST README lists); the second is Debian's `dataset-fashion-mnist`
 * copy; `contentSha256` is the uncompressed data, identical in both.
 */
export const fashionMnist: DatasetDescriptor = deepFreeze({
  name: 'fashion-mnist',
  title: 'Fashion-MNIST',
  train: {
    images: {
      name: 'train-images-idx3-ubyte.gz',
      sha256: [
        '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
        'b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7',
      ],
      contentSha256: ['c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'],
      size: 26_421_880,
    },
    labels: {
      name: 'train-labels-idx1-ubyte.gz',
      sha256: [
        'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
        '0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056',
      ],
      contentSha256: ['bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9'],
      size: 29_515,
    },
    count: 60_000,
  },
  test: {
    images: {
      name: 't10k-images-idx3-ubyte.gz',
      sha256: [
        '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
        'cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa',
      ],
      contentSha256: ['5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'],
      size: 4_422_102,
    },
    labels: {
      name: 't10k-labels-idx1-ubyte.gz',
      sha256: [
        '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
        '8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05',
      ],
      contentSha256: ['0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'],
      size: 5_148,
    },
    count: 10_000,
  },
  height: 28,
  width: 28,
  channels: 1,
  classNames: [
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
  ],
  // The S3 website endpoint speaks plain HTTP only; the SHA-256 pins make that safe.
  mirrors: ['http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'],
  debianPackage: 'dataset-fashion-mnist',
  pixelStats: { mean: 0.286, std: 0.353 },
  homepage: 'https://github.com/zalandoresearch/fashion-mnist',
  license: 'MIT',
});

/**
 * MNIST (LeCun, Cortes and Burges): handwritten digits, 60,000 training and 10,000 test, 28x28
 * greyscale, 10 classes. The original site no longer serves the files reliably; the mirrors are
 * the ones torchvision and TensorFlow use. Digests are of those mirrors' copies.
 */
export const mnist: DatasetDescriptor = deepFreeze({
  name: 'mnist',
  title: 'MNIST',
  train: {
    images: {
      name: 'train-images-idx3-ubyte.gz',
      sha256: ['440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'],
      size: 9_912_422,
    },
    labels: {
      name: 'train-labels-idx1-ubyte.gz',
      sha256: ['3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'],
      size: 28_881,
    },
    count: 60_000,
  },
  test: {
    images: {
      name: 't10k-images-idx3-ubyte.gz',
      sha256: ['8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'],
      size: 1_648_877,
    },
    labels: {
      name: 't10k-labels-idx1-ubyte.gz',
      sha256: ['f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'],
      size: 4_542,
    },
    count: 10_000,
  },
  height: 28,
  width: 28,
  channels: 1,
  classNames: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  mirrors: [
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
  ],
  pixelStats: { mean: 0.1307, std: 0.3081 },
  homepage: 'https://yann.lecun.com/exdb/mnist/',
  license: 'CC BY-SA 3.0',
});

// Built-in descriptors are shared by every caller in the process: make accidental edits throw.
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

const registry: ReadonlyMap<string, DatasetDescriptor> = new Map(
  [fashionMnist, mnist].map((d) => [d.name, d]),
);

/** Names accepted by {@link getDataset} and `loadDataset`: `fashion-mnist`, `mnist`. */
export const datasetNames: readonly string[] = Object.freeze([...registry.keys()]);

/**
 * The descriptor of a built-in dataset. Throws `NOT_FOUND` listing the known names.
 *
 * @example
 * ```ts
 * getDataset('fashion-mnist').classNames[9]; // 'Ankle boot'
 * ```
 */
export function getDataset(name: string): DatasetDescriptor {
  const descriptor = registry.get(name.trim().toLowerCase());
  if (descriptor === undefined) {
    throw new ShardlineError(
      'NOT_FOUND',
      `Unknown dataset "${name}": expected one of ${datasetNames.join(', ')}. For other data in IDX format, pass a DatasetDescriptor instead of a name.`,
      { details: { name, known: datasetNames } },
    );
  }
  return descriptor;
}

/** The four files of a descriptor, with the split and role of each. */
export function datasetFiles(
  descriptor: DatasetDescriptor,
): { split: 'train' | 'test'; role: 'images' | 'labels'; file: DatasetFile }[] {
  return (['train', 'test'] as const).flatMap((split) =>
    (['images', 'labels'] as const).map((role) => ({
      split,
      role,
      file: descriptor[split][role],
    })),
  );
}
