-- Why: reconcile re-derived two ledger facts in its own SQL: a wallet's
-- balances from its entries (the balance rule of 0003) and what a paid event
-- still pays after partial refunds (0033: payout_amount - reversed_payout, and
-- likewise the fee and the creator's net). Reads of these go through views
-- here, beside the functions that write them (0040, 0041), as the balance rule
-- itself already lives in SQL. security_invoker: a view reads with its
-- caller's rights and row-level security, never its owner's; no role but the
-- owner is granted them.

-- Each wallet's balances as its entries say.
CREATE VIEW oros_wallet_ledger_balances WITH (security_invoker = true) AS
SELECT w.id AS wallet_id,
       coalesce(sum(ledger_available_effect(l.direction, w.normal_balance, l.status, l.amount)), 0) AS available,
       coalesce(sum(ledger_pending_effect(l.direction, w.normal_balance, l.status, l.amount)), 0) AS pending
  FROM wallets w LEFT JOIN ledger_entries l ON l.wallet_id = w.id
 GROUP BY w.id;

-- What each paid event still pays: its payout, the platform's fee and the creator's net.
CREATE VIEW oros_paid_events WITH (security_invoker = true) AS
SELECT id, campaign_id, creator_id, transfer_id, event_type,
       payout_amount - reversed_payout AS payout,
       platform_fee - reversed_fee AS fee,
       (payout_amount - reversed_payout) - (platform_fee - reversed_fee) AS net
  FROM events
 WHERE status = 'paid';
