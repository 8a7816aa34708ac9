"""
Peer-to-peer file transfer: files encrypted in chunks under a one-time
content key (L{crypt}), served and fetched over a small transport
interface (L{transport}) implemented on Iroh (L{irohnode}), with the
protocol between the two sides in L{transfer}.
"""
