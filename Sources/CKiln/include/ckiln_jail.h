#ifndef CKILN_JAIL_H
#define CKILN_JAIL_H

// Namespaces, root switching and privilege calls; filled in by the jail module.

#endif
