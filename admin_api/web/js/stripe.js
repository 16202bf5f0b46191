// Stripe.js, loaded on first use from the URL GET /v1/config names (Stripe's, or localstripe's
// stand-in in development); the CSP allows scripts from that origin only.
//
// Card funding follows Stripe's "finalize payments on the server" flow, with two Stripe.js calls:
// createPaymentMethod({type: 'card', card}) (the card number stays with Stripe) and, when the bank
// asks for 3-D Secure, handleNextAction({clientSecret}). localstripe's stand-in has neither, so in
// development they are made of what it has, through localstripe's own public endpoints and the
// publishable key, as Stripe.js does: a card token (whose card localstripe takes as a payment
// method, as Stripe does for cards) and its 3-D Secure prompt. Production uses Stripe.js as is.

import { state } from './session.js';

const STRIPE_JS = 'https://js.stripe.com/v3/';

let stripePromise = null;

function standIn(stripe) {
  return {
    elements: (...args) => stripe.elements(...args),
    async createPaymentMethod({ card }) {
      const { token, error } = await stripe.createToken(card);
      return error ? { error } : { paymentMethod: { id: token.card.id } };
    },
    handleNextAction: ({ clientSecret }) => stripe.confirmCardPayment(clientSecret),
  };
}

export function loadStripe() {
  stripePromise ??= new Promise((resolve, reject) => {
    const { js_url: url, publishable_key: key } = state.config.stripe;
    if (!key) {
      stripePromise = null;
      reject(new Error('Card payments are not configured on this server (STRIPE_PUBLISHABLE_KEY)'));
      return;
    }
    const script = document.createElement('script');
    script.src = url;
    script.onload = () => {
      if (!window.Stripe) {
        reject(new Error('Stripe.js did not start'));
        return;
      }
      const stripe = window.Stripe(key);
      resolve(url === STRIPE_JS ? stripe : standIn(stripe));
    };
    script.onerror = () => {
      stripePromise = null;
      reject(new Error('Stripe.js could not be loaded; try again'));
    };
    document.head.append(script);
  });
  return stripePromise;
}
