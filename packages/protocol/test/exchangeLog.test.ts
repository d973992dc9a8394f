import { describe, expect, it } from 'vitest';
import { CRC32_IMPLEMENTATION, exchangeLogFields } from '../src/index.js';

describe('exchangeLogFields', () => {
  it('names the checksum implementation and says when the heap keeps V8 defaults', () => {
    // This test process never calls tuneHeapForStreaming, so both heap fields say so.
    expect(exchangeLogFields()).toEqual({
      checksum: `crc32-${CRC32_IMPLEMENTATION}`,
      heap_growing_percent: 'v8-default',
      external_memory: 'v8-default',
    });
  });
});
