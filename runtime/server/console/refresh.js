// Views that show a list refresh it on a timer.

export const REFRESH_MS = 5000;

/** Calls `refresh` now and every `ms` until stopped; never two at once. */
export function every(ms, refresh) {
  let timer;
  let stopped = false;
  const tick = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  void tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
