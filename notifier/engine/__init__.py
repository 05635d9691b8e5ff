"""The delivery engine, in the order of the data flow: the `router` fans events out to partner
streams; the `delivery` pool leases partners with work and serves each as a `served` partner,
whose `sender` makes one attempt through the `ssrf` guard; the `supervisor` runs delivery
workers on every core."""
