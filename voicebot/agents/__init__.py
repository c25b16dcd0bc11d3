"""Human agents: the hand-off queue, the console's protocol, opening hours and the helpdesk webhook."""
