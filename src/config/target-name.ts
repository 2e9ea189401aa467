// A target's name, as the config spells it (schema.ts `name`): what an agent's binding lists.
// The store, its migrations and the agent registry check bindings with it.
export const TARGET_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
