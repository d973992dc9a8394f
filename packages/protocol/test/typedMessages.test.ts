import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import { EvaluationResult, JobSpec, TrainRequest } from '../src/index.js';

describe('typed messages of protocol version 2', () => {
  it('carries evaluation counts as exact integers and sums as doubles', () => {
    const counts = {
      // Beyond 2^53: a uint64 count must survive as an exact bigint, not a rounded number.
      count: 2n ** 53n + 1n,
      confusion: [3n, 1n, 0n, 4n],
      topK: [1, 2],
      topKHits: [7n, 8n],
      lossSum: 1.25,
      reportedLossSum: 0.1 + 0.2,
      reportedLossCount: 8n,
      misclassified: [{ index: 2n ** 40n, label: 3, predicted: 1, confidence: 0.75 }],
    };
    const sent = TrainRequest.create({
      kind: { $case: 'evaluation', value: { requestId: 9n, computeSeconds: 0.5, counts } },
    });
    const received = TrainRequest.decode(TrainRequest.encode(sent).finish());
    expect(received).toEqual(sent);
    expect(received.kind?.$case === 'evaluation' && received.kind.value.counts).toEqual(counts);
  });

  it('leaves counts undefined for a version-1 result, whose state_json field 2 is reserved', () => {
    // What a version-1 worker sent: request_id = 1, state_json = 2 (a JSON string).
    const v1 = new BinaryWriter().uint32(8).uint64(4n).uint32(18).string('{"count":3}').finish();
    const decoded = EvaluationResult.decode(v1);
    expect(decoded.requestId).toBe(4n);
    expect(decoded.counts).toBeUndefined();
  });

  it('carries hyperparameters as a typed map: numbers, number lists, text and flags', () => {
    const job = JobSpec.create({
      jobId: 'j',
      hyperparameters: {
        dropout: { kind: { $case: 'number', value: 0.25 } },
        hiddenUnits: { kind: { $case: 'numbers', value: { values: [128, 64] } } },
        activation: { kind: { $case: 'text', value: 'relu' } },
        batchNorm: { kind: { $case: 'flag', value: false } },
        emptyList: { kind: { $case: 'numbers', value: { values: [] } } },
      },
    });
    expect(JobSpec.decode(JobSpec.encode(job).finish())).toEqual(job);
    expect(
      JobSpec.decode(JobSpec.encode(JobSpec.create({ jobId: 'j' })).finish()).hyperparameters,
    ).toEqual({});
  });
});
