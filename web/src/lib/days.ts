/**
 * Date separators in a thread: a label before the first message of each
 * local calendar day ("Today", "Yesterday", or the date).
 */

function dayKey(d: Date): string {
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "Today", "Yesterday", a weekday within the week, else the date. */
export function dayLabel(ts: string, now: Date = new Date()): string {
  const d = new Date(ts);
  if (isNaN(d.getTime())) return '';
  if (dayKey(d) === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  const sameYear = d.getFullYear() === now.getFullYear();
  return d.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short', ...(sameYear ? {} : { year: 'numeric' }) });
}

/**
 * For each message (by index), the label to show before it, or null when
 * it is on the same day as the one before.
 */
export function separators(timestamps: string[], now: Date = new Date()): (string | null)[] {
  let previous: string | null = null;
  return timestamps.map((ts) => {
    const d = new Date(ts);
    if (isNaN(d.getTime())) return null;
    const key = dayKey(d);
    if (key === previous) return null;
    previous = key;
    return dayLabel(ts, now);
  });
}

/** A conversation list's time: the clock today, else a short date. */
export function listTime(ts: string, now: Date = new Date()): string {
  const d = new Date(ts);
  if (isNaN(d.getTime())) return '';
  if (dayKey(d) === dayKey(now)) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const label = dayLabel(ts, now);
  return label === 'Yesterday' ? label : d.toLocaleDateString([], { day: 'numeric', month: 'short' });
}
