import { existsSync, readdirSync } from 'node:fs';

/** What {@link detectNvidiaGpus} found. */
export interface GpuProbe {
  /** Number of NVIDIA GPUs the kernel driver exposes. */
  count: number;
  /** Where the answer came from, for logs. */
  source: string;
}

/**
 * Counts NVIDIA GPUs that the kernel driver exposes to this process (honouring
 * CUDA_VISIBLE_DEVICES). libtensorflow falls back to the CPU silently when it sees no GPU, so
 * the backend loader asks the driver itself before choosing `tensorflow-gpu`.
 */
export function detectNvidiaGpus(env: NodeJS.ProcessEnv = process.env): GpuProbe {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && (visible.trim() === '' || visible.trim() === '-1')) {
    return { count: 0, source: `CUDA_VISIBLE_DEVICES="${visible}" hides every GPU` };
  }
  let count = 0;
  let source = 'no NVIDIA driver (/proc/driver/nvidia/gpus and /dev/nvidia* are absent)';
  try {
    count = readdirSync('/proc/driver/nvidia/gpus').length;
    source = '/proc/driver/nvidia/gpus';
  } catch {
    for (let i = 0; i < 64 && existsSync(`/dev/nvidia${i}`); i++) count = i + 1;
    if (count > 0) source = '/dev/nvidia*';
  }
  if (count > 0 && visible !== undefined) {
    const listed = visible.split(',').filter((s) => s.trim() !== '').length;
    count = Math.min(count, listed);
    source += `, limited by CUDA_VISIBLE_DEVICES="${visible}"`;
  }
  return { count, source };
}
