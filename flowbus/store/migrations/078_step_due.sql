-- When a step's delayed message (the next check of a waiting step, the retry of a pending one) is due. A message
-- a broker never delivers (RabbitMQ quorum queues can keep an expired TTL message: rabbitmq-server#10718) is
-- found by this date and sent again (flowbus.jobs: engine.overdue); the index holds only the steps waiting.
ALTER TABLE step_states ADD COLUMN due_at TEXT;
CREATE INDEX step_states_due ON step_states (due_at) WHERE status IN ('waiting', 'pending') AND due_at IS NOT NULL;
