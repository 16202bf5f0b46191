-- Why: the seed's RLS policies verbatim, plus those it forgot, so that what a
-- caller of the admin API may see is decided by the database. Requests run as
-- oros_app with request.jwt.claim.sub set; jobs run as the owner (RLS bypassed
-- for the table owner). Money never moves through table grants: oros_app may
-- only read wallets, ledger and withdrawals, and writes them through
-- SECURITY DEFINER functions (0008) that check the caller themselves.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE creator_profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE business_profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_creators ENABLE ROW LEVEL SECURITY;
ALTER TABLE tracking_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE withdrawals ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_fundings ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_status_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE settlement_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE settler_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE communities ENABLE ROW LEVEL SECURITY;
ALTER TABLE community_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE community_posts ENABLE ROW LEVEL SECURITY;
ALTER TABLE tips ENABLE ROW LEVEL SECURITY;
ALTER TABLE tip_unlocks ENABLE ROW LEVEL SECURITY;
ALTER TABLE boosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE rewards ENABLE ROW LEVEL SECURITY;
ALTER TABLE live_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE live_sales ENABLE ROW LEVEL SECURITY;

-- The seed's policies.
CREATE POLICY "users_own_profile" ON users FOR ALL USING (auth.uid() = id);
CREATE POLICY "users_own_roles" ON user_roles FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "creator_own_profile" ON creator_profiles FOR ALL USING (auth.uid() = user_id);
CREATE POLICY "business_own_profile" ON business_profiles FOR ALL USING (auth.uid() = user_id);
CREATE POLICY "wallet_owner_only" ON wallets FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "ledger_owner_only" ON ledger_entries FOR SELECT USING (
  wallet_id IN (SELECT id FROM wallets WHERE user_id = auth.uid()));
CREATE POLICY "campaigns_public_active" ON campaigns FOR SELECT USING (status = 'active');
CREATE POLICY "campaigns_business_owner" ON campaigns FOR ALL USING (auth.uid() = business_id);
CREATE POLICY "campaign_creators_view" ON campaign_creators FOR SELECT USING (
  auth.uid() = creator_id
  OR campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
CREATE POLICY "withdrawals_owner_only" ON withdrawals FOR SELECT USING (
  wallet_id IN (SELECT id FROM wallets WHERE user_id = auth.uid()));

-- What the seed forgot.
-- A user may add their own non-admin roles; admin is granted by `oros create-admin`.
CREATE POLICY "users_add_own_roles" ON user_roles FOR INSERT
  WITH CHECK (auth.uid() = user_id AND role <> 'admin');
-- Creators apply to campaigns themselves; the business decides.
CREATE POLICY "campaign_creators_apply" ON campaign_creators FOR INSERT
  WITH CHECK (auth.uid() = creator_id AND status = 'pending');
CREATE POLICY "campaign_creators_business_decides" ON campaign_creators FOR UPDATE
  USING (campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
-- Links: a creator makes and sees their own; the business sees its campaign's.
CREATE POLICY "tracking_links_creator" ON tracking_links FOR ALL USING (auth.uid() = creator_id)
  WITH CHECK (auth.uid() = creator_id AND campaign_id IN (
    SELECT campaign_id FROM campaign_creators WHERE creator_id = auth.uid() AND status = 'accepted'));
CREATE POLICY "tracking_links_business" ON tracking_links FOR SELECT USING (
  campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
-- Events: the creator who earned them and the business that paid for them.
CREATE POLICY "events_creator" ON events FOR SELECT USING (auth.uid() = creator_id);
CREATE POLICY "events_business" ON events FOR SELECT USING (
  campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
CREATE POLICY "api_keys_owner" ON api_keys FOR ALL USING (auth.uid() = user_id);
CREATE POLICY "campaign_fundings_business" ON campaign_fundings FOR SELECT USING (
  campaign_id IN (SELECT id FROM campaigns WHERE business_id = auth.uid()));
CREATE POLICY "campaign_status_history_visible" ON campaign_status_history FOR SELECT USING (
  campaign_id IN (SELECT id FROM campaigns));
-- Phase 2 and 3: owners manage their own rows.
CREATE POLICY "memberships_owner" ON memberships FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "communities_public" ON communities FOR SELECT USING (true);
CREATE POLICY "communities_owner" ON communities FOR ALL USING (auth.uid() = creator_id);
CREATE POLICY "community_members_self" ON community_members FOR ALL USING (auth.uid() = user_id);
CREATE POLICY "community_posts_owner" ON community_posts FOR ALL USING (auth.uid() = creator_id);
CREATE POLICY "tips_parties" ON tips FOR SELECT USING (auth.uid() IN (from_user_id, to_creator_id));
CREATE POLICY "tip_unlocks_parties" ON tip_unlocks FOR SELECT USING (
  tip_id IN (SELECT id FROM tips WHERE auth.uid() IN (from_user_id, to_creator_id)));
CREATE POLICY "boosts_owner" ON boosts FOR SELECT USING (auth.uid() = supporter_id);
CREATE POLICY "rewards_owner" ON rewards FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "live_events_public" ON live_events FOR SELECT USING (true);
CREATE POLICY "live_events_owner" ON live_events FOR ALL USING (auth.uid() = creator_id);
CREATE POLICY "live_sales_creator" ON live_sales FOR SELECT USING (
  live_event_id IN (SELECT id FROM live_events WHERE creator_id = auth.uid()));

-- Admins (finance, support) read everything.
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['users', 'user_roles', 'creator_profiles', 'business_profiles', 'wallets',
    'ledger_entries', 'campaigns', 'campaign_creators', 'tracking_links', 'events', 'withdrawals',
    'api_keys', 'campaign_fundings', 'campaign_status_history', 'settlement_runs', 'settler_state',
    'stripe_events', 'memberships', 'communities', 'community_members', 'community_posts', 'tips',
    'tip_unlocks', 'boosts', 'rewards', 'live_events', 'live_sales']
  LOOP
    EXECUTE format('CREATE POLICY "admin_read" ON %I FOR SELECT USING (auth.is_admin())', t);
  END LOOP;
END
$$;

-- Column grants keep money and trust fields (balances, budgets, kyc, verified)
-- out of reach even of a row the caller owns.
GRANT USAGE ON SCHEMA public TO oros_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO oros_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO oros_app;
GRANT UPDATE (username, display_name, profile_image_url, bio) ON users TO oros_app;
GRANT INSERT ON user_roles TO oros_app;
GRANT INSERT (user_id, hashtags, min_tip_amount, stripe_account_id),
      UPDATE (hashtags, min_tip_amount, stripe_account_id) ON creator_profiles TO oros_app;
GRANT INSERT (user_id, company_name, website, industry),
      UPDATE (company_name, website, industry) ON business_profiles TO oros_app;
GRANT INSERT (business_id, title, description, hashtags, objective, payout_per_action,
              destination_url, total_budget, start_date, end_date),
      UPDATE (title, description, hashtags, payout_per_action, destination_url, total_budget,
              status, start_date, end_date) ON campaigns TO oros_app;
GRANT INSERT (campaign_id, creator_id), UPDATE (status, accepted_at) ON campaign_creators TO oros_app;
GRANT INSERT (campaign_id, creator_id, code, url, destination_url) ON tracking_links TO oros_app;
GRANT INSERT (user_id, name, key_prefix, key_hash), UPDATE (name, revoked_at) ON api_keys TO oros_app;
GRANT INSERT, UPDATE ON communities, community_members, community_posts, live_events TO oros_app;
