import { watch, type FSWatcher } from 'node:fs';

/**
 * Watches a directory and calls `onChange` once things settle (editors and git write in bursts;
 * atomic renames arrive as several events). Returns a stop function.
 */
export function watchDirectory(dir: string, onChange: () => void, debounceMs = 150): () => void {
  let timer: NodeJS.Timeout | undefined;
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(onChange, debounceMs);
      timer.unref();
    });
    watcher.on('error', () => undefined);
  } catch {
    return () => undefined;
  }
  return () => {
    if (timer) clearTimeout(timer);
    watcher?.close();
  };
}
