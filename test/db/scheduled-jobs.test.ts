// M1: the scheduled jobs' record (migration 0012) belongs to the service alone: the Worker's
// scheduled handler writes it as service_role, operators read it through the ops API; no
// seller and no anonymous caller reads or writes it.
import type { Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asAnon, asSeller, asService } from "../../schema/tables.ts";
import { createSeller, failure, sharedDb } from "./helpers.ts";

let sql: Sql;
beforeAll(() => {
  sql = sharedDb(2);
});
afterAll(() => sql.end());

describe("public.scheduled_jobs", () => {
  it("service_role records a run; sellers and anon can neither read nor write it", async () => {
    const job = `dbtest_${Math.random().toString(36).slice(2, 10)}`;
    await asService(sql, (tx) => tx`insert into public.scheduled_jobs (job, status, started_at, runs) values (${job}, 'running', now(), 1)`);
    await asService(sql, (tx) => tx`update public.scheduled_jobs set status = 'ok', finished_at = now(), counts = ${tx.json({ request_log: 3 })} where job = ${job}`);
    const [row] = await asService(sql, (tx) => tx`select status, counts from public.scheduled_jobs where job = ${job}`);
    expect({ ...row }).toEqual({ status: "ok", counts: { request_log: 3 } });

    const seller = await createSeller(sql, "jobs-reader");
    expect(await failure(() => asSeller(sql, seller.id, (tx) => tx`select * from public.scheduled_jobs`))).toBe("42501");
    expect(await failure(() => asSeller(sql, seller.id, (tx) => tx`update public.scheduled_jobs set status = 'failed' where job = ${job}`))).toBe("42501");
    expect(await failure(() => asAnon(sql, (tx) => tx`select * from public.scheduled_jobs`))).toBe("42501");
    // Not even the service deletes the record: a job's history is only ever updated.
    expect(await failure(() => asService(sql, (tx) => tx`delete from public.scheduled_jobs where job = ${job}`))).toBe("42501");
  });

  it("refuses a status or a job name outside the known forms", async () => {
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.scheduled_jobs (job, status, started_at) values ('Bad Name', 'ok', now())`))).toBe("23514");
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.scheduled_jobs (job, status, started_at) values ('fine_name', 'done', now())`))).toBe("23514");
  });
});
