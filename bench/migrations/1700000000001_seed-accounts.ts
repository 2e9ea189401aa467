// Seed data and a later column, as a project's second migration would.
import type { MigrationBuilder } from 'node-pg-migrate';

export const up = (pgm: MigrationBuilder): void => {
  pgm.addColumn('accounts', { plan: { type: 'text', notNull: true, default: 'free' } });
  pgm.sql(
    "INSERT INTO accounts (email, plan) SELECT 'user' || g || '@example.test', CASE WHEN g % 10 = 0 THEN 'pro' ELSE 'free' END FROM generate_series(1, 200) g",
  );
};

export const down = (pgm: MigrationBuilder): void => {
  pgm.sql('DELETE FROM accounts');
  pgm.dropColumn('accounts', 'plan');
};
