const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

function time(hour: string, minute: string): string {
  return `${hour.padStart(2, '0')}:${minute.padStart(2, '0')}`;
}

const isNumber = (field: string) => /^\d{1,2}$/.test(field);

/**
 * A five-field cron expression in words for the common shapes ("Every day at 08:00", "Every 15 minutes");
 * null when it is not five fields. Other valid shapes get a generic description.
 */
export function describeCron(expression: string): string | null {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5 || fields.some((field) => !/^[\d*/,-]+$/.test(field))) return null;
  const [minute, hour, dayOfMonth, month, dayOfWeek] = fields as [string, string, string, string, string];
  const everyDay = dayOfMonth === '*' && month === '*';
  const step = /^\*\/(\d+)$/.exec(minute);
  if (step && hour === '*' && everyDay && dayOfWeek === '*') return `Every ${step[1]} minutes`;
  if (minute === '*' && hour === '*' && everyDay && dayOfWeek === '*') return 'Every minute';
  if (isNumber(minute) && hour === '*' && everyDay && dayOfWeek === '*')
    return `Every hour at minute ${Number(minute)}`;
  if (isNumber(minute) && isNumber(hour) && everyDay) {
    const at = time(hour, minute);
    if (dayOfWeek === '*') return `Every day at ${at}`;
    if (dayOfWeek === '1-5') return `Every weekday at ${at}`;
    if (dayOfWeek === '0,6' || dayOfWeek === '6,0') return `Every weekend day at ${at}`;
    if (/^\d$/.test(dayOfWeek)) return `Every ${DAYS[Number(dayOfWeek) % 7]} at ${at}`;
  }
  if (isNumber(minute) && isNumber(hour) && isNumber(dayOfMonth) && month === '*' && dayOfWeek === '*')
    return `On day ${Number(dayOfMonth)} of every month at ${time(hour, minute)}`;
  return `Custom schedule (${fields.join(' ')})`;
}
