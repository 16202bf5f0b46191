// The card step every card payment of the app shares (campaign funding, tips, boosts): Stripe.js's card
// Element, Stripe.js turning the card into a PaymentMethod, the API confirming the payment's own
// PaymentIntent with it (`confirm`), and Stripe.js's 3-D Secure challenge when the bank asks. Nothing is
// paid for until Stripe's webhook reaches the API: `settled` waits for that and says what it shows.
// docs/webapp.md, "Card payments".

import { button, h } from './dom.js';
import { money } from './format.js';

export function cardStep(stripe, { amount, clientSecret, confirm, settled, statusId }) {
  const mount = h('div', { id: 'card-element', class: 'card-element', role: 'group', 'aria-label': 'Card details' });
  const error = h('p', { class: 'field-error', id: 'card-error', role: 'alert' });
  const outcome = h('p', { id: statusId, role: 'status' });
  const card = stripe.elements().create('card');
  queueMicrotask(() => card.mount(mount));
  const pay = button(`Pay ${money(amount)}`, async () => {
    error.textContent = '';
    const declined = (message) => {
      error.textContent = message || 'The card was not accepted.';
    };
    const made = await stripe.createPaymentMethod({ type: 'card', card });
    if (made.error) return declined(made.error.message);
    let step;
    try {
      step = await confirm(made.paymentMethod.id);
    } catch (err) {
      if (err.field !== 'payment_method') throw err;
      return declined(err.message);
    }
    if (step.status === 'requires_action') {  // 3-D Secure: Stripe.js shows the bank's challenge
      // A payment paid later (no secret of its own on the page) gets it in the confirmation's answer.
      const done = await stripe.handleNextAction({ clientSecret: step.client_secret || clientSecret });
      if (done.error) return declined(done.error.message);
      if (done.paymentIntent && done.paymentIntent.status === 'requires_payment_method') {
        return declined('The card was not authenticated. Try again or use another card.');
      }
    }
    pay.remove();  // paid: a second press would only be refused
    return settled(outcome);
  }, { kind: 'primary', id: 'pay' });
  return h('div', {}, h('label', { for: 'card-element' }, 'Card'), mount, error, h('div', { class: 'actions' }, pay), outcome);
}

// Polls `check` (an API read) once a second until it answers something truthy, for up to 30 s.
export async function poll(check) {
  for (let attempt = 0; attempt < 30; attempt += 1) {
    const found = await check();
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return null;
}
