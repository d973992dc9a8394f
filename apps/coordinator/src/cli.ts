#!/usr/bin/env node
/**
 * shardline-coordinator: the command line of the Shardline coordinator.
 */
import { tuneHeapForStreaming } from '@shardline/core/heap';
import { runCli } from './program.js';

// At startup, before any training: the exchange streams tens of megabytes of short-lived buffers per
// step, and V8's default heap limits would collect the whole heap mid-exchange (see heap.ts).
tuneHeapForStreaming();

process.exitCode = await runCli(process.argv, { stdout: process.stdout, stderr: process.stderr });
