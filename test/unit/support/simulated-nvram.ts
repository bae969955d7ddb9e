// A firmware boot manager in memory, driven through efibootmgr's command line (create, delete, -v).
import { ok } from './fake-host.js';

export class SimulatedNvram {
  entries: Array<{ num: string; label: string; disk: string; part: number; loader: string }> = [];
  private next = 0;

  constructor(readonly partUuids: Record<string, string> = {}) {}

  efibootmgr(args: readonly string[]): ReturnType<typeof ok> {
    if (args.includes('-c')) {
      const v = (flag: string) => args[args.indexOf(flag) + 1]!;
      const num = (this.next++).toString(16).toUpperCase().padStart(4, '0');
      this.entries.unshift({ num, label: v('-L'), disk: v('-d'), part: Number(v('-p')), loader: v('-l') });
      return ok(this.print());
    }
    if (args.includes('-B')) {
      const num = args[args.indexOf('-b') + 1]!;
      const before = this.entries.length;
      this.entries = this.entries.filter((e) => e.num !== num);
      if (this.entries.length === before) return { exitCode: 5, stdout: '', stderr: `Could not delete Boot${num}` };
      return ok(this.print());
    }
    return ok(this.print());
  }

  print(): string {
    const lines = [`BootOrder: ${this.entries.map((e) => e.num).join(',')}`];
    for (const e of this.entries) {
      const guid = this.partUuids[`${e.disk}:${e.part}`] ?? '00000000-0000-0000-0000-000000000000';
      lines.push(`Boot${e.num}* ${e.label}\tHD(${e.part},GPT,${guid},0x800,0x100000)/File(${e.loader})`);
    }
    return `${lines.join('\n')}\n`;
  }
}

