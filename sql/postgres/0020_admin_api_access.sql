-- Why: the seed's policies let a creator see a campaign only while it is
-- active, so a creator accepted on a paused campaign lost sight of it (and of
-- their own links' campaign). A member now sees the campaigns they applied to.
-- The membership test is a SECURITY DEFINER function because a policy on
-- campaigns that queries campaign_creators, whose own policy queries
-- campaigns, would recurse.
CREATE OR REPLACE FUNCTION auth.is_campaign_member(p_campaign uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM campaign_creators WHERE campaign_id = p_campaign AND creator_id = auth.uid())
$$;
GRANT EXECUTE ON FUNCTION auth.is_campaign_member(uuid) TO oros_app;

CREATE POLICY "campaigns_member_creator" ON campaigns FOR SELECT USING (auth.is_campaign_member(id));
