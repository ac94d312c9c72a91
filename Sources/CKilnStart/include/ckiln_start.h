#ifndef CKILN_START_H
#define CKILN_START_H

// Linking this target into an executable installs an early constructor that
// makes a static Swift binary work in an empty jail with no /proc:
// it hands argv to the Swift runtime (CommandLine.arguments would otherwise
// be empty) and turns off the backtracer, which would look for its helper
// binary through /proc. It has no API; this symbol only anchors the link.
void ckiln_start_anchor(void);

#endif
