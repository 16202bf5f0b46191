// Finance and admin: settlement runs, reconcile, the KYC queue, off-Stripe funding, ledger
// adjustments, and withdrawals to pay.

import { ApiError, get, id, post, query } from '../api.js';
import { button, dl, h, section, table, toast } from '../dom.js';
import * as features from '../features.js';
import { form } from '../forms.js';
import { count, money, when } from '../format.js';
import { link, page } from '../router.js';
import { statusBadge } from './campaigns.js';

const TABS = [['/finance', 'Settlements'], ['/finance/reconcile', 'Reconcile'], ['/finance/kyc', 'KYC queue'],
  ['/finance/funding', 'Off-Stripe funding'], ['/finance/adjustments', 'Adjustments'], ['/finance/withdrawals', 'Withdrawals']];

function frame(path, title, ...children) {
  return h('div', {}, h('h1', {}, title),
    h('nav', { class: 'tabs', 'aria-label': 'Finance' }, h('ul', {}, TABS.map(([to, label]) =>
      h('li', {}, link(to, label, { 'aria-current': to === path ? 'page' : null }))))),
    ...children);
}

function reasons(byReason) {
  const entries = Object.entries(byReason || {});
  return entries.length ? h('ul', { class: 'plain' }, entries.map(([reason, n]) => h('li', {}, h('code', {}, reason), `: ${count(n)}`))) : 'none';
}

// What the run's refunds reversed and refused, and what they took back from supporters' rewards.
function refundsText(f) {
  const parts = [`${count(f.reversed)} reversed (${money(f.amount)}), ${count(f.rejected)} refused`];
  if (f.share_rewards?.count) parts.push(`${count(f.share_rewards.count)} share rewards lowered (${money(f.share_rewards.amount)})`);
  if (f.boost_rewards?.count) parts.push(`${count(f.boost_rewards.count)} boost rewards lowered (${money(f.boost_rewards.amount)})`);
  return parts.join('; ');
}

function reportView(r) {
  return dl([
    ['Events seen', count(r.events_seen)], ['Paid', h('span', { class: 'events-paid' }, count(r.events_paid))],
    ['Rejected', count(r.events_rejected)], ['Paid out', money(r.amount_paid)], ['Platform fees', money(r.fees)],
    ['Rejected by reason', reasons(r.rejected_by_reason)],
    ...(r.share_rewards ? [['Share rewards', `${count(r.share_rewards.events)} events through share links, ${count(r.share_rewards.rewards)} rewards (${money(r.share_rewards.amount)})`]] : []),
    ...(r.live_sales ? [['Live sales', `${count(r.live_sales.paid)} paid (${money(r.live_sales.amount)})`]] : []),
    ...(r.refunds ? [['Refunds', refundsText(r.refunds)]] : []),
    ...(r.checks ? [['Checks', r.ok ? `all ${count(r.checks.length)} hold`
      : r.checks.filter((c) => !c.ok).map((c) => c.name).join(', ')]] : []),
    ...(r.campaigns ? [['Campaigns', table([
      { label: 'Campaign', value: (c) => h('code', {}, c.id) }, { label: 'Paid', value: (c) => count(c.paid), class: 'num' },
      { label: 'Rejected', value: (c) => count(c.rejected), class: 'num' }, { label: 'Amount', value: (c) => money(c.amount_paid), class: 'num' },
      { label: 'Ended', value: (c) => (c.completed ? 'budget spent' : '') },
    ], Object.entries(r.campaigns).map(([key, c]) => ({ id: key, ...c })), { empty: 'none' })]] : []),
  ]);
}

page({
  path: '/finance', title: 'Settlements', roles: ['admin'], nav: { label: 'Finance' },
  render: async () => {
    const runs = await get('/v1/admin/settlements?limit=50');
    const latest = h('div', { id: 'settlement-report', 'aria-live': 'polite' });
    return frame('/finance', 'Settlements',
      section('Run now', h('p', {}, 'Settlement also runs on its schedule; this settles what arrived until now.'),
        h('div', { class: 'actions' },
          button('Run settlement now', async () => {
            const report = await post('/v1/admin/settlements');
            latest.replaceChildren(h('h3', {}, 'This run'), reportView(report));
            toast(`Settled: ${report.events_paid} paid, ${report.events_rejected} rejected`);
            const list = document.getElementById('runs');
            list.replaceWith(runsTable((await get('/v1/admin/settlements?limit=50')).items));
          }, { kind: 'primary', id: 'run-settlement' }),
          button('Release due holds', async () => {
            const { released } = await post('/v1/admin/holds/release');
            toast(`${released} held entries released`);
          }, { id: 'release-holds' })),
        latest),
      section('Runs', runsTable(runs.items)));
  },
});

function runsTable(items) {
  return h('div', { id: 'runs' }, table([
    { label: 'Started', value: (r) => when(r.started_at) }, { label: 'Kind', value: (r) => r.kind },
    { label: 'Status', value: (r) => r.status + (r.dry_run ? ' (dry run)' : '') },
    { label: 'Paid', value: (r) => count(r.events_paid), class: 'num' }, { label: 'Rejected', value: (r) => count(r.events_rejected), class: 'num' },
    { label: 'Amount', value: (r) => money(r.amount_paid), class: 'num' },
    { label: 'Report', value: (r) => h('details', {}, h('summary', {}, 'Details'),
      reportView({ ...(r.report || {}), ...r }), r.error ? h('p', { class: 'field-error' }, r.error) : null) },
  ], items, { empty: 'No settlement has run yet.' }));
}

page({
  path: '/finance/reconcile', title: 'Reconcile', roles: ['admin'],
  render: async () => {
    // The scheduler's last reconcile at once (auditing the whole books takes seconds); "Check now" runs one.
    const { items: [last] } = await get(`/v1/admin/settlements${query({ kind: 'reconcile', limit: 1 })}`);
    const holder = h('div', { id: 'reconcile-result', 'aria-live': 'polite' },
      last ? reconcileView(last.report, `Checked by the scheduler ${when(last.finished_at)}.`)
        : reconcileView(await get('/v1/admin/reconcile'), 'Checked just now.'));
    return frame('/finance/reconcile', 'Reconcile',
      section('Books', holder, h('p', {}, button('Check now', async () => {
        holder.replaceChildren(reconcileView(await get('/v1/admin/reconcile'), 'Checked just now.'));
      }, { id: 'reconcile-now' }))));
  },
});

function reconcileView(result, checkedWhen) {
  const failing = result.checks.filter((c) => !c.ok);
  return h('div', {},
    h('p', { id: 'reconcile-status', class: result.ok ? 'ok' : 'bad' },
      result.ok ? 'All invariants hold.' : `${failing.length} check(s) failing.`),
    h('p', { class: 'muted', id: 'reconcile-when' }, checkedWhen),
    table([
      { label: 'Check', value: (c) => c.name }, { label: 'Result', value: (c) => h('span', { class: c.ok ? 'ok' : 'bad' }, c.ok ? 'ok' : 'FAILING') },
      { label: 'Detail', value: (c) => c.detail },
    ], [...failing, ...result.checks.filter((c) => c.ok)]));
}

page({
  path: '/finance/kyc', title: 'KYC queue', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('kyc_status') || 'pending';
    const users = await get(`/v1/admin/users${query({ kyc_status: status, role: 'creator', cursor: q.get('cursor') })}`);
    const decide = (u, verdict) => async () => {
      await post(`/v1/admin/users/${id(u.id)}/kyc`, { status: verdict });
      toast(`${u.email}: KYC ${verdict}`);
      refresh();
    };
    return frame('/finance/kyc', 'KYC queue',
      h('p', {}, 'Show: ', ['pending', 'approved', 'rejected'].map((s) => [link(`/finance/kyc?kyc_status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
      section(`Creators: ${status}`, table([
        { label: 'Email', value: (u) => u.email }, { label: 'Name', value: (u) => u.display_name || u.username || '' },
        { label: 'Payout account', value: (u) => u.stripe_account_id || 'none yet' }, { label: 'Signed up', value: (u) => when(u.created_at) },
        { label: 'KYC', value: (u) => u.kyc_status },
        { label: 'Decision', value: (u) => h('div', { class: 'actions' },
          u.kyc_status !== 'approved' ? button('Approve', decide(u, 'approved'), { kind: 'primary', 'aria-label': `Approve ${u.email}` }) : null,
          u.kyc_status !== 'rejected' ? button('Reject', decide(u, 'rejected'), { kind: 'danger', 'aria-label': `Reject ${u.email}` }) : null) },
      ], users.items, { empty: 'Nobody is waiting.' }),
      users.next_cursor ? link(`/finance/kyc${query({ kyc_status: status, cursor: users.next_cursor })}`, 'More →') : null));
  },
});

page({
  path: '/finance/funding', title: 'Off-Stripe funding', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('status') || 'draft';
    const campaigns = await get(`/v1/campaigns${query({ status, limit: 100 })}`);
    const fund = form({
      id: 'admin-funding', submit: 'Record funds', resetOnSuccess: true,
      fields: [
        { name: 'campaign_id', label: 'Campaign id', required: true, value: q.get('campaign') || '' },
        { name: 'amount', label: 'Amount received (USD)', required: true, inputmode: 'decimal' },
        { name: 'reference', label: 'Reference (wire or cheque number)', required: true },
      ],
      onSubmit: async ({ campaign_id: campaignId, ...body }) => {
        if (!campaignId) throw new ApiError(422, { code: 'invalid', message: 'campaign id is required', field: 'campaign_id' });
        const funding = await post(`/v1/admin/campaigns/${id(campaignId)}/funding`, body,
          { headers: { 'Idempotency-Key': crypto.randomUUID() } });
        toast(`Recorded ${money(funding.amount)} for the campaign`);
        refresh();
      },
    });
    return frame('/finance/funding', 'Off-Stripe funding',
      section('Record money received', h('p', {}, 'For a wire or a cheque: escrow and the campaign budget rise at once.'), fund.el),
      section('Campaigns', h('p', {}, 'Show: ', ['draft', 'active', 'paused'].map((s) => [link(`/finance/funding?status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
        table([
          { label: 'Campaign', value: (c) => c.title }, { label: 'Status', value: (c) => statusBadge(c.status) },
          { label: 'Funded', value: (c) => money(c.funded_budget), class: 'num' }, { label: 'Remaining', value: (c) => money(c.remaining_budget), class: 'num' },
          { label: 'Id', value: (c) => h('code', {}, c.id) },
          { label: 'Action', value: (c) => button('Fund', () => {
            const field = document.getElementById('admin-funding-campaign_id');
            field.value = c.id;
            document.getElementById('admin-funding-amount').focus();
          }, { 'aria-label': `Fund ${c.title}` }) },
        ], campaigns.items, { empty: `No ${status} campaign.` })));
  },
});

function legRow(i) {
  const field = (name, control) => h('div', { class: 'field' }, h('label', { for: `leg-${i}-${name}` }, name.replace('_', ' ')), control);
  return h('fieldset', { class: 'leg', 'data-leg': i }, h('legend', {}, `Leg ${i + 1}`),
    field('account', h('select', { id: `leg-${i}-account` }, [['user_id', 'a user\'s wallet (user id)'], ['platform', 'platform wallet'], ['wallet_id', 'a wallet id']]
      .map(([v, l]) => h('option', { value: v }, l)))),
    field('target', h('input', { id: `leg-${i}-target`, placeholder: 'user id, wallet id, or fees / clearing' })),
    field('direction', h('select', { id: `leg-${i}-direction` }, h('option', { value: 'credit' }, 'credit'), h('option', { value: 'debit' }, 'debit'))),
    field('amount', h('input', { id: `leg-${i}-amount`, inputmode: 'decimal' })));
}

page({
  path: '/finance/adjustments', title: 'Adjustments', roles: ['admin'],
  render: async () => {
    const legs = h('div', { id: 'legs' }, legRow(0), legRow(1));
    const legsError = h('p', { class: 'field-error', id: 'adjustment-legs-error', role: 'alert' });
    const result = h('div', { id: 'adjustment-result', 'aria-live': 'polite' });
    const adjust = form({
      id: 'adjustment', submit: 'Post adjustment',
      fields: [{ name: 'reason', label: 'Reason', required: true, help: 'Kept on every ledger entry of the adjustment.' }],
      extra: h('div', {}, legs, legsError, button('Add a leg', () => legs.append(legRow(legs.children.length)))),
      onSubmit: async (values) => {
        legsError.textContent = '';
        const body = { ...values, legs: [...legs.children].map((_, i) => {
          const account = document.getElementById(`leg-${i}-account`).value;
          return { [account]: document.getElementById(`leg-${i}-target`).value.trim(),
            direction: document.getElementById(`leg-${i}-direction`).value, amount: document.getElementById(`leg-${i}-amount`).value.trim() };
        }) };
        try {
          const done = await post('/v1/admin/adjustments', body);
          result.replaceChildren(h('p', {}, `Posted transfer ${done.transfer_id} (${done.entries.length} entries).`));
          toast('Adjustment posted');
        } catch (err) {
          if (!err.field || !err.field.startsWith('legs')) throw err;
          legsError.textContent = `${err.field}: ${err.message}`;
        }
      },
    });
    return frame('/finance/adjustments', 'Adjustments',
      section('New adjustment', h('p', {}, 'A balanced, settled transfer: credits must equal debits. Escrow cannot be adjusted.'), adjust.el, result));
  },
});

// The payout job, once, now (POST /v1/admin/payouts); it also runs on its schedule.
function payNow(refresh) {
  const outcome = h('p', { id: 'payout-result', role: 'status' });
  return h('div', {}, h('div', { class: 'actions' }, button('Pay due withdrawals now', async () => {
    const run = await post('/v1/admin/payouts');
    const text = `Paid ${count(run.paid)} (${money(run.amount_paid)}), failed ${count(run.failed)}, deferred ${count(run.deferred)}`;
    toast(text);
    await refresh();
    document.getElementById('payout-result').textContent = `Last run: ${text}.`;
  }, { kind: 'primary', id: 'pay-now' })), outcome);
}

page({
  path: '/finance/withdrawals', title: 'Withdrawals', roles: ['admin'],
  render: async ({ query: q, refresh }) => {
    const status = q.get('status') || 'requested';
    const [list, canPay] = await Promise.all([get(`/v1/admin/withdrawals${query({ status, cursor: q.get('cursor') })}`),
      features.has('post', '/v1/admin/payouts')]);
    return frame('/finance/withdrawals', 'Withdrawals',
      h('p', {}, 'Show: ', ['requested', 'processing', 'completed', 'failed'].map((s) => [link(`/finance/withdrawals?status=${s}`, s, { 'aria-current': s === status ? 'true' : null }), ' '])),
      section(status === 'requested' ? 'To pay' : `Withdrawals: ${status}`,
        h('p', { class: 'muted' }, 'The payout job pays requested withdrawals through Stripe on its schedule; each is paid at most once.'),
        canPay ? payNow(refresh) : null,
        table([
          { label: 'Requested', value: (w) => when(w.created_at) }, { label: 'Creator', value: (w) => w.email },
          { label: 'Amount', value: (w) => money(w.amount), class: 'num' }, { label: 'Method', value: (w) => w.method },
          { label: 'Status', value: (w) => w.status }, { label: 'Stripe transfer', value: (w) => w.stripe_transfer_id || '—' },
          { label: 'Failure', value: (w) => w.failure_reason || '' },
        ], list.items, { empty: 'Nothing here.' }),
        list.next_cursor ? link(`/finance/withdrawals${query({ status, cursor: list.next_cursor })}`, 'More →') : null));
  },
});
