/**
 * What the gradient exchange runs with in this process, as log fields: both CLIs put them on
 * their first line (the coordinator's `coordinator listening`, a worker's `joined coordinator`),
 * for anyone comparing the exchange's speed across machines.
 */

import { CRC32_IMPLEMENTATION } from '@shardline/core/crc32';
import { heapTuning } from '@shardline/core/heap';

/**
 * `checksum` (`crc32-simd`, `crc32-zlib` or `crc32-portable`), `heap_growing_percent` and
 * `external_memory` (the heap tuning of @shardline/core, or `v8-default` when none was applied).
 */
export function exchangeLogFields(): Record<string, string | number> {
  const tuning = heapTuning();
  return {
    checksum: `crc32-${CRC32_IMPLEMENTATION}`,
    heap_growing_percent: tuning?.percent ?? 'v8-default',
    external_memory: tuning?.externalMemory ?? 'v8-default',
  };
}
