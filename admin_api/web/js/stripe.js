// Stripe.js, loaded on first use from the URL GET /v1/config names (Stripe's, or localstripe's
// stand-in in development); the CSP allows scripts from that origin only.

import { state } from './session.js';

let stripePromise = null;

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
    script.onload = () => (window.Stripe ? resolve(window.Stripe(key)) : reject(new Error('Stripe.js did not start')));
    script.onerror = () => {
      stripePromise = null;
      reject(new Error('Stripe.js could not be loaded; try again'));
    };
    document.head.append(script);
  });
  return stripePromise;
}
