/** Date separators in a thread and times in the conversation list. */
import { describe, expect, it } from 'vitest';
import { dayLabel, listTime, separators } from './days';

const now = new Date(2026, 4, 25, 15, 0);
const at = (d: number, h: number) => new Date(2026, 4, d, h, 30).toISOString();

describe('date separators', () => {
  it('puts one label before the first message of each day', () => {
    const ts = [at(20, 9), at(20, 23), at(24, 8), at(25, 1), at(25, 14)];
    const got = separators(ts, now);
    expect(got.map((g) => g !== null)).toEqual([true, false, true, true, false]);
    expect(got[2]).toBe('Yesterday');
    expect(got[3]).toBe('Today');
    expect(got[0]).toMatch(/20/);
  });

  it('names the year only for another year, and ignores bad times', () => {
    expect(dayLabel(new Date(2024, 0, 2).toISOString(), now)).toMatch(/2024/);
    expect(dayLabel(at(10, 9), now)).not.toMatch(/2026/);
    expect(separators(['not a time', at(25, 9)], now)).toEqual([null, 'Today']);
  });

  it('lists today by the clock and older days by date', () => {
    expect(listTime(at(25, 9), now)).toMatch(/09.?30|9.?30/);
    expect(listTime(at(24, 9), now)).toBe('Yesterday');
    expect(listTime(at(3, 9), now)).toMatch(/3/);
    expect(listTime('nope', now)).toBe('');
  });
});
