// The CI scenario's migrations (bench/ci.ts): the shape of a small application's schema.
import type { MigrationBuilder } from 'node-pg-migrate';

export const up = (pgm: MigrationBuilder): void => {
  pgm.createTable('accounts', {
    id: 'id',
    email: { type: 'text', notNull: true, unique: true },
    created_at: { type: 'timestamptz', notNull: true, default: pgm.func('now()') },
  });
  pgm.createTable('orders', {
    id: 'id',
    account_id: { type: 'integer', notNull: true, references: 'accounts', onDelete: 'CASCADE' },
    amount: { type: 'numeric(12,2)', notNull: true },
    status: { type: 'text', notNull: true, default: 'new' },
    created_at: { type: 'timestamptz', notNull: true, default: pgm.func('now()') },
  });
  pgm.createIndex('orders', 'account_id');
  pgm.createIndex('orders', ['status', 'created_at']);
};

export const down = (pgm: MigrationBuilder): void => {
  pgm.dropTable('orders');
  pgm.dropTable('accounts');
};
