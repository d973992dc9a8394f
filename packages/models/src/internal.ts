/**
 * Small helpers the package's modules share (not exported from the package): hashing model
 * files, tidying messages, checking parsed JSON and making INVALID_ARGUMENT errors.
 */
import { createHash } from 'node:crypto';
import { ShardlineError } from '@shardline/core';

/** SHA-256 of `bytes`, in hex: how files are named in provenance and plugin lists. */
export const sha256 = (bytes: Uint8Array): string =>
  createHash('sha256').update(bytes).digest('hex');

/** `message` without a final period, to embed it in a sentence of our own. */
export const withoutPeriod = (message: string): string => message.replace(/\.$/, '');

/** True for a JSON object (not null, not an array). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An INVALID_ARGUMENT error with structured details for logs. */
export function invalid(message: string, details: Record<string, unknown> = {}): ShardlineError {
  return new ShardlineError('INVALID_ARGUMENT', message, { details });
}
